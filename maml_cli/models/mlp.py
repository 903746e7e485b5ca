"""A fully connected network (the MAML paper's 40-40 ReLU MLP for sinusoid regression)."""
from __future__ import annotations

from typing import Sequence

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
