"""Vectorised few-shot task sampling from an in-memory pool of labelled images."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from maml_cli.core.tasks import TaskBatch
from maml_cli.errors import MamlError

Plan = Callable[[int, torch.Generator], Tensor]  # the random choices of `tasks` tasks: a CPU tensor [tasks, ...]
Realize = Callable[[Tensor], TaskBatch]  # the tasks those choices make


def check_positive(**values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MamlError(f"{key} must be a positive integer, got {value!r}")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts``; the same in every process and on every machine."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int) -> torch.Generator:
    """A CPU generator, so CPU and GPU runs draw the same tasks."""
    return torch.Generator().manual_seed(seed)


class TaskSampler:
    """Random meta-batches, drawn with its own CPU generator (checkpointable via its state)."""

    def __init__(self, plan: Plan, realize: Realize, seed: int):
        self._plan, self._realize = plan, realize
        self.generator = generator(seed)

    def sample(self, tasks: int) -> TaskBatch:
        check_positive(tasks=tasks)
        return self._realize(self._plan(tasks, self.generator))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@dataclass(frozen=True)
class ClassPool:
    """The images of one split: ``images`` ``uint8 [N, C, H, W]`` with each class stored contiguously,
    ``counts[k]`` images for class ``k`` (classes may differ in size), named ``names[k]``."""

    images: Tensor
    counts: Tensor
    names: tuple[str, ...]

    @staticmethod
    def from_blocks(blocks: Tensor, names: list[str]) -> ClassPool:
        """From equal-size classes ``[classes, per_class, C, H, W]``."""
        counts = torch.full((blocks.shape[0],), blocks.shape[1], dtype=torch.long)
        return ClassPool(blocks.reshape(-1, *blocks.shape[2:]), counts, tuple(names))

    @property
    def offsets(self) -> Tensor:
        return self.counts.cumsum(0) - self.counts

    def select(self, classes: list[int]) -> ClassPool:
        """A pool of the given classes, in that order."""
        counts = self.counts[torch.as_tensor(classes, dtype=torch.long)]
        shift = self.offsets[classes] - (counts.cumsum(0) - counts)  # where each class starts: here minus there
        index = torch.arange(int(counts.sum())) + shift.repeat_interleave(counts)
        return ClassPool(self.images[index], counts, tuple(self.names[k] for k in classes))

    def rotated(self) -> ClassPool:
        """Four times the classes: each class also rotated by 90, 180 and 270 degrees as new classes."""
        images = torch.cat([torch.rot90(self.images, k, dims=(-2, -1)) for k in range(4)])
        names = tuple(f"{name}/rot{90 * k}" for k in range(4) for name in self.names)
        return ClassPool(images, self.counts.repeat(4), names)

    def to(self, device: torch.device | str) -> ClassPool:
        """Images on ``device``; the bookkeeping stays on the CPU, where tasks are drawn."""
        return ClassPool(self.images.to(device), self.counts, self.names)

    def plan(self, tasks: int, generator: torch.Generator, ways: int, per_class: int) -> Tensor:
        """Image indices ``[tasks, ways, per_class]``: ``ways`` distinct classes per task, in a random order,
        and ``per_class`` distinct images of each. Needs ``ways <= classes`` and ``per_class <= counts.min()``."""
        classes = torch.rand(tasks, len(self.counts), generator=generator).topk(ways, dim=1).indices
        keys = torch.rand(tasks, ways, int(self.counts.max()), generator=generator)
        keys.masked_fill_(torch.arange(keys.shape[-1]) >= self.counts[classes].unsqueeze(-1), 2.0)
        return self.offsets[classes].unsqueeze(-1) + keys.topk(per_class, dim=2, largest=False).indices

    def realize(self, index: Tensor, shots: int) -> TaskBatch:
        """The tasks of ``plan``'s indices: per class, the first ``shots`` images support, the rest query;
        class ``k`` of a task is labelled ``k``; both sets are ordered by label."""
        tasks, ways = index.shape[:2]
        labels = torch.arange(ways, device=self.images.device).expand(tasks, ways)

        def take(picks: Tensor) -> tuple[Tensor, Tensor]:
            x = self.images.index_select(0, picks.reshape(-1).to(self.images.device)).float().div_(255)
            return x.view(tasks, -1, *self.images.shape[1:]), labels.repeat_interleave(picks.shape[-1], dim=1)

        return TaskBatch(*take(index[..., :shots]), *take(index[..., shots:]))
