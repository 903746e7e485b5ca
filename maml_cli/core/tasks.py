"""The unit of meta-learning data: a batch of few-shot tasks as stacked tensors."""

from __future__ import annotations

from dataclasses import dataclass

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

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four tensors in field order: ``(x_support, y_support, x_query, y_query)``."""
        return self.x_support, self.y_support, self.x_query, self.y_query

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TaskBatch:
        """The batch on ``device``.

        Args:
            device: Where the tensors go.
            non_blocking: Copy asynchronously where possible (from pinned memory).

        Returns:
            A batch of the moved tensors.
        """
        return TaskBatch(*(t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def __getitem__(self, index: int | slice) -> TaskBatch:
        """One task (keeps a leading dim of 1) or a slice of tasks."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TaskBatch(*(t[index] for t in self.tensors()))

    def chunks(self, size: int) -> list[TaskBatch]:
        """Consecutive slices of at most ``size`` tasks.

        Args:
            size: The most tasks in a slice.

        Returns:
            The slices, in order.
        """
        return [self[i : i + size] for i in range(0, len(self), size)]

    @staticmethod
    def cat(batches: list[TaskBatch]) -> TaskBatch:
        """The tasks of ``batches`` in one batch, in order.

        Args:
            batches: Batches of tasks of one shape.

        Returns:
            Their concatenation along dim 0.
        """
        return TaskBatch(*(torch.cat(group) for group in zip(*(b.tensors() for b in batches))))
