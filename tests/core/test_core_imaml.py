"""Implicit MAML: the meta-gradient (I + H/λ)⁻¹ ∇L_query(φ) by conjugate gradient is the gradient of the query loss
at the proximal inner problem's solution φ*(θ); it depends on the inner loop only through where it ends, so no
graph of the inner steps is kept (as with Reptile, unlike MAML)."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from maml_cli.core.autodiff import hessian_vector_product
from maml_cli.core.imaml import conjugate_gradient
from tests.core.core_helpers import (
    DTYPE,
    ROUNDING,
    classification_batch,
    conv_net,
    flat_parameters,
    learner,
    linear_model,
    meta_gradient,
    regression_batch,
    relative_error,
    single_thread,  # noqa: F401 (autouse fixture)
)

LAM, LR, FEATURES = 2.0, 0.1, 4
SOLVED = 150  # inner steps: gradient descent on these tasks contracts by 0.79 a step, so 150 solve them to rounding


def _tasks():
    return linear_model(FEATURES), regression_batch(shots=6, queries=5, features=FEATURES)


def _imaml_gradient(model, batch, steps: int = SOLVED, cg_steps: int = FEATURES) -> Tensor:
    imaml = learner(model, loss="mse", method="imaml", steps=steps, lr=LR, lam=LAM, cg_steps=cg_steps)
    return meta_gradient(imaml, batch)[1]


def _solution(batch, i: int, theta: Tensor) -> tuple[Tensor, Tensor]:
    """φ*(θ) = argmin (1/n)‖Xφ − y‖² + λ/2‖φ − θ‖² = (Q + λI)⁻¹(b + λθ), Q = (2/n)XᵀX, b = (2/n)Xᵀy; and Q."""
    x, y = batch.x_support[i], batch.y_support[i]
    q = 2 / len(x) * x.T @ x
    return torch.linalg.solve(q + LAM * torch.eye(FEATURES, dtype=DTYPE), 2 / len(x) * x.T @ y + LAM * theta), q


def _query_loss_at_solution(batch, theta: Tensor) -> Tensor:
    """The meta-objective: the mean over tasks of L_query(φ*(θ))."""
    losses = [F.mse_loss(batch.x_query[i] @ _solution(batch, i, theta)[0], batch.y_query[i]) for i in range(len(batch))]
    return torch.stack(losses).mean()


def _exact_implicit_gradient(batch, theta: Tensor) -> Tensor:
    """The mean over tasks of dφ*/dθ ∇L_query(φ*) = (I + Q/λ)⁻¹ (2/n) X_qᵀ(X_q φ* − y_q), solved exactly."""
    grads = []
    for i in range(len(batch)):
        phi, q = _solution(batch, i, theta)
        x, y = batch.x_query[i], batch.y_query[i]
        grads.append(torch.linalg.solve(torch.eye(FEATURES, dtype=DTYPE) + q / LAM, 2 / len(x) * x.T @ (x @ phi - y)))
    return torch.stack(grads).mean(0).flatten()


def test_cg_meta_gradient_converges_to_the_exact_implicit_gradient_as_cg_steps_grow():
    model, batch = _tasks()
    exact = _exact_implicit_gradient(batch, model.weight.detach().T)
    errors = [relative_error(_imaml_gradient(model, batch, cg_steps=c), exact) for c in range(1, FEATURES + 1)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.1  # one CG step is far from it
    # CG is exact after as many steps as there are parameters (4); float64 rounding through 150 inner steps remains
    assert errors[-1] < ROUNDING


def test_meta_gradient_equals_central_finite_differences_of_the_query_loss_at_the_inner_solution():
    model, batch = _tasks()
    theta, eps = model.weight.detach().T, 1e-5
    finite_differences = torch.stack(
        [
            (_query_loss_at_solution(batch, theta + eps * e) - _query_loss_at_solution(batch, theta - eps * e))
            / (2 * eps)
            for e in torch.eye(FEATURES, dtype=DTYPE).unsqueeze(-1)
        ]
    )
    # the objective is quadratic in θ: central differences are exact but for rounding, ~1e-16 / ε
    assert relative_error(_imaml_gradient(model, batch), finite_differences) < 1e-6


def test_with_an_approximate_inner_solve_it_converges_as_the_inner_steps_grow():
    model, batch = _tasks()
    exact = _exact_implicit_gradient(batch, model.weight.detach().T)
    errors = [relative_error(_imaml_gradient(model, batch, steps=k), exact) for k in (1, 4, 16, 64, SOLVED)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.1 and errors[-1] < ROUNDING


def test_conjugate_gradient_solves_a_positive_definite_system_in_as_many_steps_as_its_size_and_stays_at_zero():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(5, 5, generator=g, dtype=DTYPE)
    a, b = m @ m.T + torch.eye(5, dtype=DTYPE), torch.randn(5, generator=g, dtype=DTYPE)
    solution = conjugate_gradient(lambda v: {"x": a @ v["x"]}, {"x": b}, steps=5)["x"]
    assert relative_error(solution, torch.linalg.solve(a, b)) < ROUNDING  # a well-conditioned 5×5 system
    zero = conjugate_gradient(lambda v: {"x": a @ v["x"]}, {"x": torch.zeros(5, dtype=DTYPE)}, steps=3)["x"]
    assert torch.equal(zero, torch.zeros(5, dtype=DTYPE))  # 0/0 is taken as 0, not NaN


@pytest.mark.parametrize("functional", [False, True])
def test_hessian_vector_products_of_a_cubic_at_a_point_are_its_hessian_times_each_vector(functional):
    """f(x, y) = ½ xᵀAx + Σ y³ has the Hessian diag(A, 6·diag(y)); the gradient's graph, built once, serves every
    vector (conjugate gradient asks for several at one point)."""
    g = torch.Generator().manual_seed(4)
    m = torch.randn(4, 4, generator=g, dtype=DTYPE)
    a = m @ m.T
    point = {"x": torch.randn(4, generator=g, dtype=DTYPE), "y": torch.randn(3, generator=g, dtype=DTYPE)}

    def f(p: dict[str, Tensor]) -> tuple[Tensor, tuple[()]]:
        return 0.5 * p["x"] @ a @ p["x"] + (p["y"] ** 3).sum(), ()

    product = hessian_vector_product(f, point, functional)
    for _ in range(3):
        v = {"x": torch.randn(4, generator=g, dtype=DTYPE), "y": torch.randn(3, generator=g, dtype=DTYPE)}
        hv = product(v)
        assert (
            relative_error(hv["x"], a @ v["x"]) < ROUNDING
            and relative_error(hv["y"], 6 * point["y"] * v["y"]) < ROUNDING
        )


@pytest.mark.parametrize("method", ["imaml", "maml"])
def test_the_meta_gradient_depends_on_the_inner_loop_only_through_where_it_ends(method):
    """From θ, 5 inner steps end at φ; starting at φ with no inner step gives iMAML the same meta-gradient:
    (I + H(φ)/λ)⁻¹ ∇L_query(φ) is a function of φ. MAML's differentiates through the path, and differs."""
    batch = classification_batch(tasks=1)
    long_path = learner(conv_net(), method=method, steps=5, lr=0.1, engine="loop")
    phi = long_path.adapt(batch.x_support[0], batch.y_support[0], steps=5)
    no_path = copy.deepcopy(long_path)
    no_path.inner.steps = 0
    no_path.model.load_state_dict(phi, strict=False)
    assert not torch.equal(flat_parameters(no_path), flat_parameters(long_path))
    error = relative_error(meta_gradient(no_path, batch)[1], meta_gradient(long_path, batch)[1])
    if method == "imaml":
        assert error < ROUNDING  # the same computations on the same φ (an adapted copy of it)
    else:
        assert error > 1e-3


@contextmanager
def saved_for_backward() -> Iterator[dict]:
    """The peak, in bytes, of the distinct tensors that autograd holds for backward passes while it runs."""
    state: dict = {"live": {}, "peak": 0}

    def pack(t: Tensor) -> Tensor:
        if id(t) not in state["live"]:
            state["live"][id(t)] = t.numel() * t.element_size()
            weakref.finalize(t, state["live"].pop, id(t))
            state["peak"] = max(state["peak"], sum(state["live"].values()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield state


@pytest.mark.parametrize("method", ["imaml", "reptile", "maml"])
def test_memory_kept_for_backward_does_not_grow_with_the_inner_steps_for_imaml_and_reptile(method):
    """The exact counterpart of the memory benchmark (benchmarks/inner_steps_memory.py): the loop engine, one task
    at a time, with its backward passes run by torch.autograd, whose saved tensors hooks see everything it keeps."""
    batch, peaks = classification_batch(tasks=2), []
    for steps in (2, 6):
        model = learner(conv_net(), method=method, steps=steps, lr=0.1, cg_steps=3, engine="loop")
        with saved_for_backward() as saved:
            model.meta_backward(batch)
        peaks.append(saved["peak"])
    if method == "maml":
        assert peaks[1] > 2 * peaks[0]  # second order: every step's activations, until the meta-gradient is taken
    else:
        assert peaks[0] == peaks[1]  # one step's graph at a time, then the query's and CG's (iMAML), whatever k is
