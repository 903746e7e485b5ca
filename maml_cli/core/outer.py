"""The outer loop's optimiser and meta-learning-rate schedule, built from ``OptimizerConfig``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from maml_cli.core.config import OptimizerConfig, OptimizerName, Schedule

_OPTIMIZERS: dict[OptimizerName, type[torch.optim.Optimizer]] = {
    OptimizerName.adam: torch.optim.Adam,
    OptimizerName.adamw: torch.optim.AdamW,
    OptimizerName.sgd: torch.optim.SGD,
    OptimizerName.rmsprop: torch.optim.RMSprop,
}


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The meta-optimiser over the trainable ``params`` (frozen ones are left out).

    Args:
        params: The meta-parameters (a learner's ``parameters()``).
        cfg: The optimiser's settings.

    Returns:
        The optimiser.
    """
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name in (OptimizerName.sgd, OptimizerName.rmsprop):
        kwargs["momentum"] = cfg.momentum
    return _OPTIMIZERS[cfg.name]([p for p in params if p.requires_grad], **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: OptimizerConfig,
    iterations: int,
    budget_spent: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant meta-lr, or cosine or linear annealing from ``lr`` to ``min_lr`` over ``iterations`` steps.

    Args:
        optimizer: The meta-optimiser.
        cfg: Its settings (``schedule``, ``min_lr``).
        iterations: The number of meta-training steps.
        budget_spent: The share of a wall-clock budget spent so far (0 to 1), read at every step: the
            schedule's progress is then the larger of the steps' share and the budget's, so that it ends
            at whichever comes first (``span=max_time``; the caller owns the clock).

    Returns:
        The schedule, to step once per meta-training step.
    """
    span, end = max(iterations, 1), cfg.min_lr / cfg.lr

    def progress(step: int) -> float:
        done = min(step / span, 1.0)
        return max(done, min(budget_spent(), 1.0)) if budget_spent is not None else done

    shapes: dict[Schedule, Callable[[float], float]] = {
        Schedule.constant: lambda _: 1.0,
        Schedule.cosine: lambda p: end + (1.0 - end) * (1.0 + math.cos(math.pi * p)) / 2.0,
        Schedule.linear: lambda p: 1.0 - (1.0 - end) * p,
    }
    shape = shapes[cfg.schedule]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: shape(progress(step)))


def clip_meta_gradient(params: Iterable[nn.Parameter], cfg: OptimizerConfig) -> torch.Tensor | None:
    """Clip the meta-gradient's global norm when ``clip_grad_norm`` is set.

    Args:
        params: The meta-parameters; those without a gradient are left out.
        cfg: The optimiser's settings (``clip_grad_norm``).

    Returns:
        The norm before clipping, or ``None`` when clipping is off.
    """
    if cfg.clip_grad_norm is None:
        return None
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.clip_grad_norm)
