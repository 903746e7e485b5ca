"""The MAML paper's four-block convolutional network."""
from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor, nn


class Pooling(str, Enum):
    stride = "stride"  # stride-2 convolutions, spatial mean at the end (MAML's Omniglot network)
    max = "max"  # stride-1 convolutions + 2×2 max-pooling, flattened (MAML's mini-ImageNet network)


class Conv4(nn.Module):
    """4 × [conv 3×3 → BatchNorm → ReLU (→ max-pool)] → linear ``head``.

    Omniglot (Finn et al. 2017): 64 filters, ``pooling="stride"``. mini-ImageNet: 32 filters,
    ``pooling="max"``. BatchNorm uses batch statistics unless ``track_running_stats`` is set
    (needed by the ``per_step`` BatchNorm policy).
    """

    def __init__(
        self,
        out_features: int,
        in_channels: int = 1,
        hidden: int = 64,
        image_size: int = 28,
        pooling: Pooling | str = Pooling.stride,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.pooling = Pooling(pooling)
        blocks, channels, size = [], in_channels, image_size
        for _ in range(4):
            stride = 2 if self.pooling is Pooling.stride else 1
            block = [
                nn.Conv2d(channels, hidden, 3, stride=stride, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=track_running_stats),
                nn.ReLU(inplace=True),
            ]
            if self.pooling is Pooling.max:
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            blocks.append(nn.Sequential(*block))
            channels = hidden
        self.features = nn.Sequential(*blocks)
        features = hidden if self.pooling is Pooling.stride else hidden * size * size
        self.head = nn.Linear(features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        h = h.mean((-2, -1)) if self.pooling is Pooling.stride else torch.flatten(h, 1)
        return self.head(h)
