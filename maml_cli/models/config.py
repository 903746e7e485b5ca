"""Typed model settings (the ``model`` config group) and the factory that builds them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from torch import nn

from maml_cli.errors import MamlError
from maml_cli.models.conv4 import Conv4, Pooling
from maml_cli.models.mlp import MLP


@dataclass
class Conv4Config:
    name: str = "conv4"
    hidden: int = 64
    pooling: Pooling = Pooling.stride


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [40, 40])


def build_model(cfg, input_shape: tuple[int, ...], out_features: int, track_running_stats: bool = False) -> nn.Module:
    """The network named by ``cfg.name`` for inputs of ``input_shape`` and ``out_features`` outputs."""
    if cfg.name == "conv4":
        if len(input_shape) != 3:
            raise MamlError(f"model=conv4 needs image inputs (C, H, W), but the dataset gives {tuple(input_shape)}")
        channels, size, _ = input_shape
        return Conv4(out_features, channels, cfg.hidden, size, cfg.pooling, track_running_stats)
    if cfg.name == "mlp":
        in_features = 1
        for dim in input_shape:
            in_features *= dim
        return MLP(in_features, out_features, tuple(cfg.hidden))
    raise MamlError(f"model.name={cfg.name!r} is not known; choose one of: conv4, mlp")
