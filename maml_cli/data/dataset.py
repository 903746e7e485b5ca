"""The dataset interface: random meta-batches for training, fixed episodes for evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from functools import partial

import torch

from maml_cli.core.tasks import TaskBatch
from maml_cli.data.config import DatasetConfig
from maml_cli.data.sampler import ClassPool, Plan, Realize, TaskSampler, check_positive, generator, stable_seed
from maml_cli.errors import MamlError


class FewShotDataset(ABC):
    """A source of few-shot tasks in ``splits``; see ``TaskBatch`` for the tensors' shapes.

    A dataset declares its settings (``config``, a dataclass whose ``name`` is the dataset's) and is
    built from them: ``Dataset(config(...))``.
    """

    config: type[DatasetConfig]
    name: str
    task_kind: str  # "classification" or "regression"
    input_shape: tuple[int, ...]  # of one example: (C, H, W) for images
    splits: tuple[str, ...] = ("train", "val", "test")

    @abstractmethod
    def num_classes(self, split: str) -> int:
        """Classes in ``split`` (rotated copies count as classes); 0 for regression."""

    @abstractmethod
    def _tasks(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> tuple[Plan, Realize]:
        """How to draw tasks of this shape, after checking that the shape is possible."""

    def _episode_key(self, split: str, ways: int, shots: int, queries: int, seed: int) -> tuple:
        """What a fixed episode depends on (besides its index)."""
        return self.name, split, ways, shots, queries, seed

    def _episode_plan(self, plan: Plan, key: tuple, num_tasks: int) -> torch.Tensor:
        """The choices of fixed episodes: task ``i`` from its own generator, seeded by ``key`` and ``i``."""
        check_positive(num_tasks=num_tasks)
        return torch.cat([plan(1, generator(stable_seed(*key, i))) for i in range(num_tasks)])

    def sampler(
        self, split: str, ways: int, shots: int, queries: int, seed: int = 0, device: str | torch.device = "cpu"
    ) -> TaskSampler:
        """Random meta-batches of ``split``, reproducible from ``seed`` (and resumable via its state)."""
        plan, realize = self._tasks(self._check_split(split), ways, shots, queries, torch.device(device))
        return TaskSampler(plan, realize, stable_seed("sampler", self.name, split, seed))

    def episodes(
        self,
        split: str,
        ways: int,
        shots: int,
        queries: int,
        num_tasks: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> TaskBatch:
        """Fixed evaluation tasks: task ``i`` depends only on the data, the task shape, ``seed`` and ``i``,
        so they are the same in every run and on every machine, and a smaller ``num_tasks`` gives a prefix."""
        plan, realize = self._tasks(self._check_split(split), ways, shots, queries, torch.device(device))
        return realize(self._episode_plan(plan, self._episode_key(split, ways, shots, queries, seed), num_tasks))

    def _check_split(self, split: str) -> str:
        if split not in self.splits:
            raise MamlError(f"unknown split {split!r} of {self.name}; choose one of {', '.join(self.splits)}")
        return split


class ImageDataset(FewShotDataset):
    """Image classification from one in-memory ``ClassPool`` per split."""

    task_kind = "classification"

    def __init__(self, pools: dict[str, ClassPool], augment_splits: Iterable[str] = ()):
        """``augment_splits``: splits whose classes are rotated by 90, 180 and 270 degrees into new classes."""
        for split in augment_splits:
            if split not in pools:
                raise MamlError(f"augment_splits names unknown split {split!r}; choose among {', '.join(pools)}")
        self._pools = {split: pool.rotated() if split in augment_splits else pool for split, pool in pools.items()}
        self._on_device: dict[tuple[str, torch.device], ClassPool] = {}
        self.splits = tuple(pools)
        self.input_shape = tuple(next(iter(pools.values())).images.shape[1:])

    def num_classes(self, split: str) -> int:
        return len(self.pool(split).names)

    def pool(self, split: str) -> ClassPool:
        """The images, class sizes and class names of ``split`` (after rotation augmentation)."""
        return self._pools[self._check_split(split)]

    def _tasks(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> tuple[Plan, Realize]:
        check_positive(ways=ways, shots=shots, queries=queries)
        pool = self._pools[split]
        classes = len(pool.names)
        if ways > classes:
            advice = f"choose ways <= {classes}" if classes > 1 else "a task needs at least 2 classes: add some"
            raise MamlError(
                f"ways={ways} but split {split!r} of {self.name} has only {classes} "
                f"class{'es' * (classes != 1)}; {advice}"
            )
        smallest = int(pool.counts.argmin())
        if shots + queries > pool.counts[smallest]:
            raise MamlError(
                f"shots+queries={shots + queries} but class {pool.names[smallest]!r} in split {split!r} of "
                f"{self.name} has only {int(pool.counts[smallest])} images; choose shots+queries <= "
                f"{int(pool.counts[smallest])}"
            )
        if (split, device) not in self._on_device:
            self._on_device[split, device] = pool.to(device)
        realize = partial(self._on_device[split, device].realize, shots=shots)
        return partial(pool.plan, ways=ways, per_class=shots + queries), realize
