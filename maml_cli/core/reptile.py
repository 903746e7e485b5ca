"""Reptile (Nichol, Achiam & Schulman 2018): move the initialisation towards each task's adapted parameters.

Per task, the inner loop trains from θ on all of the task's examples, support and query (the paper's "train
shots"), and ends at φ; the task's meta-gradient is θ − φ. Averaged over the meta-batch and stepped by plain SGD
at learning rate ε, it is the paper's update θ ← θ + ε(φ̄ − θ); any other ``torch.optim`` optimiser steps it as
well. Nothing is differentiated through the inner loop. Evaluation adapts on the support set, as for every method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from maml_cli.core.batchnorm import Buffers

if TYPE_CHECKING:
    from maml_cli.core.learner import MetaLearner, MetaParameters, Params

ADAM_BETAS = (0.0, 0.999)  # the Reptile paper's inner Adam: no momentum (β₁ = 0)
ADAM_EPS = 1e-8


def task_direction(
    learner: MetaLearner,
    tensors: MetaParameters,
    buffers: list[Buffers],
    x_s: Tensor,
    y_s: Tensor,
    x_q: Tensor,
    y_q: Tensor,
    batches: Tensor | None = None,
    *,
    functional: bool,
) -> tuple[Params, Tensor, list[Tensor], list[Buffers]]:
    """One task's Reptile meta-gradient θ − φ, from the (detached) meta-parameters ``tensors``.

    Args:
        learner: The learner whose inner loop adapts.
        tensors: θ (and the fixed inner learning rates), detached.
        buffers: The task's buffer sets.
        x_s, y_s, x_q, y_q: The task's support and query sets: the inner loop trains on both.
        batches: Each inner step's examples (indices into support then query, ``[steps, size]``), or None for all.
        functional: Inner gradients by ``torch.func`` (under vmap).

    Returns:
        θ − φ by parameter name, the query outputs under φ (for the logs), the support losses before each
        step (on that step's examples) and the buffer sets after the task.
    """
    x, y = torch.cat([x_s, x_q]), torch.cat([y_s, y_q])
    steps = learner.inner.steps
    path, support_losses, buffers = learner._adapt(
        tensors, buffers, x, y, steps, True, functional=functional, batches=batches, keep_path=False
    )
    phi = path[-1]
    out, buffers = learner._forward(phi, tensors.step_weights, buffers, steps, x_q, query=True)
    direction = {n: tensors.model[n] - phi[n] for n in learner.adapted_names}
    return direction, out.detach(), support_losses, buffers


def inner_batches(tasks: int, examples: int, steps: int, size: int, device: torch.device) -> Tensor:
    """Which examples each inner step trains on, as the paper's code draws them: without replacement, epoch
    after epoch of a fresh random order (torch's global generator, which training checkpoints save).

    Args:
        tasks: The tasks of the meta-batch.
        examples: Examples per task (support and query).
        steps: Inner steps.
        size: Examples per step.
        device: Where the indices go.

    Returns:
        Indices ``[tasks, steps, size]``.
    """
    epochs = -(-steps * size // examples)
    orders = torch.rand(tasks, epochs, examples).argsort(dim=-1)  # a random permutation per task and epoch
    return orders.flatten(1)[:, : steps * size].reshape(tasks, steps, size).to(device)


def adam_direction(
    grad: Tensor, moments: tuple[Tensor, Tensor] | None, step: int
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Adam's step direction m̂ / (√v̂ + ε) at inner step ``step`` (0-based), and the moments after it.

    Args:
        grad: The gradient of this step.
        moments: The first and second moments after the previous step (None before the first).
        step: The inner step.

    Returns:
        The direction (to scale by the learning rate and subtract) and the updated moments.
    """
    beta1, beta2 = ADAM_BETAS
    m, v = moments if moments is not None else (torch.zeros_like(grad), torch.zeros_like(grad))
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    t = step + 1
    return (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + ADAM_EPS), (m, v)
