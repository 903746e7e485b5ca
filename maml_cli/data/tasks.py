"""The unit of meta-learning data: a batch of few-shot tasks as stacked tensors."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskBatch:
    """Support and query sets of ``tasks`` episodes, stacked along dim 0.

    Classification: ``x_support`` is ``[tasks, ways*shots, C, H, W]`` and ``y_support`` holds
    labels ``0..ways-1``. Regression: inputs ``[tasks, shots, D]``, targets ``[tasks, shots, 1]``.
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor

    def __len__(self) -> int:
        return self.x_support.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TaskBatch":
        return TaskBatch(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))

    def __getitem__(self, index: int | slice) -> "TaskBatch":
        """One task (keeps a leading dim of 1) or a slice of tasks."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TaskBatch(*(getattr(self, f.name)[index] for f in fields(self)))

    def chunks(self, size: int) -> list["TaskBatch"]:
        """Consecutive slices of at most ``size`` tasks."""
        return [self[i : i + size] for i in range(0, len(self), size)]

    @staticmethod
    def cat(batches: list["TaskBatch"]) -> "TaskBatch":
        return TaskBatch(*(torch.cat([getattr(b, f.name) for b in batches]) for f in fields(TaskBatch)))
