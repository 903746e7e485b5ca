"""MAML++'s per-step BatchNorm statistics: a copy of the model's buffers for each inner step."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from maml_cli.errors import MamlError

Buffers = dict[str, Tensor]


class StepBuffers(nn.ModuleList):
    """One set of the model's buffers for each of ``sets`` inner steps; empty when ``sets`` is 0.

    Set ``s`` holds the running statistics used at inner step ``s`` (the last set: the query pass); they
    are the mean over the tasks of a meta-batch of each task's update (``store``), and evaluation in
    eval mode uses them.

    Args:
        model: The model whose buffers are copied; with ``sets``, it needs BatchNorm layers that track
            running statistics.
        sets: How many sets to keep.
    """

    def __init__(self, model: nn.Module, sets: int) -> None:
        super().__init__()
        if sets and not any(getattr(m, "track_running_stats", False) for m in model.modules()):
            raise MamlError("batchnorm=per_step needs BatchNorm layers with track_running_stats=True")
        self.extend(_BufferSet(dict(model.named_buffers())) for _ in range(sets))

    def as_dicts(self) -> list[Buffers]:
        """Each set's buffers by the model's buffer names (the stored tensors themselves)."""
        return [buffer_set.as_dict() for buffer_set in self._sets()]

    @torch.no_grad()
    def store(self, updated: list[Buffers]) -> None:
        """Set each set to the mean over tasks of the tasks' updated buffers.

        Args:
            updated: For each set, the tasks' buffers (tasks along dim 0). Floating-point ones are
                averaged in at least float32 (half-precision buffers; float64 is kept), counters are
                taken from the first task (they are equal).
        """
        for stored, buffers in zip(self._sets(), updated):
            for name, t in buffers.items():
                if t.is_floating_point():
                    stored.get(name).copy_(t.mean(0, dtype=torch.promote_types(t.dtype, torch.float32)))
                else:
                    stored.get(name).copy_(t[0])

    def _sets(self) -> list[_BufferSet]:
        return [cast(_BufferSet, module) for module in self]


class _BufferSet(nn.Module):
    """A copy of a model's buffers (one inner step's BatchNorm statistics)."""

    def __init__(self, buffers: Buffers) -> None:
        super().__init__()
        self.names = list(buffers)
        for name, t in buffers.items():
            self.register_buffer(name.replace(".", "__"), t.detach().clone())

    def get(self, name: str) -> Tensor:
        """The stored buffer of the model's buffer ``name``."""
        return cast(Tensor, getattr(self, name.replace(".", "__")))

    def as_dict(self) -> Buffers:
        """The stored buffers by the model's buffer names."""
        return {n: self.get(n) for n in self.names}
