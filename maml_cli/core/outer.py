"""The outer loop's optimiser and meta-learning-rate schedule, built from ``OptimizerConfig``."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from maml_cli.core.config import OptimizerConfig, OptimizerName, Schedule

_OPTIMIZERS = {
    OptimizerName.adam: torch.optim.Adam,
    OptimizerName.adamw: torch.optim.AdamW,
    OptimizerName.sgd: torch.optim.SGD,
    OptimizerName.rmsprop: torch.optim.RMSprop,
}


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The meta-optimiser over the trainable ``params`` (frozen ones are left out)."""
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name in (OptimizerName.sgd, OptimizerName.rmsprop):
        kwargs["momentum"] = cfg.momentum
    return _OPTIMIZERS[cfg.name]([p for p in params if p.requires_grad], **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, iterations: int):
    """Constant meta-lr, or cosine annealing from ``lr`` to ``min_lr`` over ``iterations`` steps."""
    if cfg.schedule is Schedule.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(iterations, 1), eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def clip_meta_gradient(params: Iterable[nn.Parameter], cfg: OptimizerConfig) -> torch.Tensor | None:
    """Clip the meta-gradient's global norm when ``clip_grad_norm`` is set; returns the norm before."""
    if cfg.clip_grad_norm is None:
        return None
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.clip_grad_norm)
