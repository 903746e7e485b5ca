"""A fully connected network (the MAML paper's 40-40 ReLU MLP for sinusoid regression)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn


class MLP(nn.Module):
    """``in_features`` → hidden ReLU layers → linear ``head`` (inputs are flattened)."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (40, 40)) -> None:
        super().__init__()
        layers, width = [], in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass
class MLPConfig:
    """``model=mlp``: the MAML paper's sinusoid network, two hidden layers of 40 ReLU units."""

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [40, 40])


def build_mlp(
    cfg: MLPConfig, input_shape: tuple[int, ...], out_features: int, track_running_stats: bool = False
) -> MLP:
    """An ``MLP`` on the flattened inputs of ``input_shape`` (it has no BatchNorm to track)."""
    return MLP(math.prod(input_shape), out_features, tuple(cfg.hidden))
