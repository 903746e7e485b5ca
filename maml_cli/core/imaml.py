"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019): the meta-gradient of a proximal inner problem's solution.

The inner loop approximately solves φ* = argmin_φ L_support(φ) + λ/2·‖φ − θ‖² (``steps`` steps from θ). By the
implicit function theorem dφ*/dθ = (I + H/λ)⁻¹ with H = ∇²L_support(φ*), so the task's meta-gradient is
(I + H/λ)⁻¹ ∇L_query(φ), found by ``cg_steps`` of conjugate gradient on Hessian-vector products at φ (the support
gradient's graph built once, differentiated again for each). It needs φ, not the path to it: nothing of the
inner steps is kept, and memory does not grow with their number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from maml_cli.core.autodiff import grad_and_value, hessian_vector_product
from maml_cli.core.batchnorm import Buffers

if TYPE_CHECKING:
    from maml_cli.core.learner import MetaLearner, MetaParameters, Params


def task_direction(
    learner: MetaLearner,
    tensors: MetaParameters,
    buffers: list[Buffers],
    x_s: Tensor,
    y_s: Tensor,
    x_q: Tensor,
    y_q: Tensor,
    *,
    functional: bool,
) -> tuple[Params, Tensor, list[Tensor], list[Buffers]]:
    """One task's implicit meta-gradient (I + H/λ)⁻¹ ∇L_query(φ), from the (detached) meta-parameters ``tensors``.

    Args:
        learner: The learner whose inner loop adapts (its ``inner.lam`` and ``inner.cg_steps`` apply).
        tensors: θ (and the fixed inner learning rates), detached.
        buffers: The task's buffer sets.
        x_s, y_s, x_q, y_q: The task's support and query sets.
        functional: Inner gradients by ``torch.func`` (under vmap).

    Returns:
        The meta-gradient by parameter name, the query outputs under φ, the support losses before each
        inner step and the buffer sets after the task.
    """
    steps, lam = learner.inner.steps, learner.inner.lam
    path, support_losses, buffers = learner._adapt(
        tensors, buffers, x_s, y_s, steps, True, functional=functional, keep_path=False
    )
    phi = path[-1]
    adapted = {n: phi[n] for n in learner.adapted_names}

    def loss_on(x: Tensor, y: Tensor, step: int, query: bool) -> Callable[[Params], tuple[Tensor, Any]]:
        def loss(sub: Params) -> tuple[Tensor, Any]:
            out, after = learner._forward({**phi, **sub}, tensors.step_weights, buffers, step, x, query=query)
            return learner.loss_fn(out, y), (out.detach(), after)

        return loss

    query_grad, (_, (out, buffers)) = grad_and_value(loss_on(x_q, y_q, steps, True), adapted, False, functional)
    support_loss = loss_on(x_s, y_s, max(steps - 1, 0), False)  # as the last inner step's support pass
    hessian_times = hessian_vector_product(support_loss, adapted, functional)

    def matvec(v: Params) -> Params:
        """(I + H/λ) v, with H the support loss's Hessian at φ."""
        hv = hessian_times(v)
        return {n: v[n] + hv[n] / lam for n in v}

    return conjugate_gradient(matvec, query_grad, learner.inner.cg_steps), out, support_losses, buffers


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, steps: int) -> Params:
    """``steps`` iterations of conjugate gradient for A x = b from x = 0 (A symmetric positive definite).

    Exact after as many steps as A has distinct eigenvalues, in exact arithmetic. A residual that reaches
    zero stays there (0/0 is taken as 0), and no branch depends on the values: it runs under vmap.

    Args:
        matvec: v ↦ A v on tensors by name.
        b: The right-hand side.
        steps: The iterations.

    Returns:
        The approximate solution x, by name.
    """
    x = {n: torch.zeros_like(t) for n, t in b.items()}
    r, p = dict(b), dict(b)
    rr = _dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = _ratio(rr, _dot(p, ap))
        x = {n: x[n] + alpha * p[n] for n in x}
        r = {n: r[n] - alpha * ap[n] for n in r}
        rr_next = _dot(r, r)
        p = {n: r[n] + _ratio(rr_next, rr) * p[n] for n in p}
        rr = rr_next
    return x


def _dot(a: Params, b: Params) -> Tensor:
    return torch.stack([(a[n] * b[n]).sum() for n in a]).sum()


def _ratio(a: Tensor, b: Tensor) -> Tensor:
    """a / b, and 0 where b is 0 (then a is 0 too: a converged residual)."""
    return a / torch.where(b == 0, torch.ones_like(b), b)
