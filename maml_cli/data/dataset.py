"""The dataset interface: random meta-batches for training, fixed episodes for evaluation."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable

import torch

from maml_cli.data.sampler import ClassPool, Draw, TaskSampler, check_positive, generator, stable_seed
from maml_cli.data.tasks import TaskBatch
from maml_cli.errors import MamlError


class FewShotDataset(ABC):
    """A source of few-shot tasks in ``splits``; see ``TaskBatch`` for the tensors' shapes."""

    name: str
    task_kind: str  # "classification" or "regression"
    input_shape: tuple[int, ...]  # of one example: (C, H, W) for images
    splits: tuple[str, ...] = ("train", "val", "test")

    @abstractmethod
    def num_classes(self, split: str) -> int:
        """Classes in ``split`` (rotated copies count as classes); 0 for regression."""

    @abstractmethod
    def _drawer(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> Draw:
        """A function drawing tasks of this shape from a generator, after checking the shape is possible."""

    def _episode_key(self, split: str, ways: int, shots: int, queries: int, seed: int) -> tuple:
        """What a fixed episode depends on (besides its index)."""
        return self.name, split, ways, shots, queries, seed

    def sampler(self, split: str, ways: int, shots: int, queries: int, seed: int = 0, device: str | torch.device = "cpu") -> TaskSampler:
        """Random meta-batches of ``split``, reproducible from ``seed`` (and resumable via its state)."""
        draw = self._drawer(self._check_split(split), ways, shots, queries, torch.device(device))
        return TaskSampler(draw, stable_seed("sampler", self.name, split, seed))

    def episodes(self, split: str, ways: int, shots: int, queries: int, num_tasks: int, seed: int = 0, device: str | torch.device = "cpu") -> TaskBatch:
        """Fixed evaluation tasks: task ``i`` depends only on the data, the task shape, ``seed`` and ``i``,
        so they are the same in every run and on every machine, and a smaller ``num_tasks`` gives a prefix."""
        draw = self._drawer(self._check_split(split), ways, shots, queries, torch.device(device))
        check_positive(num_tasks=num_tasks)
        key = self._episode_key(split, ways, shots, queries, seed)
        return TaskBatch.cat([draw(1, generator(stable_seed(*key, i))) for i in range(num_tasks)])

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
        return len(self._pools[self._check_split(split)].names)

    def class_names(self, split: str) -> tuple[str, ...]:
        return self._pools[self._check_split(split)].names

    def _drawer(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> Draw:
        check_positive(ways=ways, shots=shots, queries=queries)
        pool = self._pools[split]
        if ways > len(pool.names):
            raise MamlError(f"ways={ways} but split {split!r} of {self.name} has only {len(pool.names)} classes; "
                            f"choose ways <= {len(pool.names)}")
        smallest = int(pool.counts.argmin())
        if shots + queries > pool.counts[smallest]:
            raise MamlError(f"shots+queries={shots + queries} but class {pool.names[smallest]!r} in split {split!r} of "
                            f"{self.name} has only {int(pool.counts[smallest])} images; choose shots+queries <= "
                            f"{int(pool.counts[smallest])}")
        if (split, device) not in self._on_device:
            self._on_device[split, device] = pool.to(device)
        on_device = self._on_device[split, device]
        return lambda tasks, gen: on_device.draw(tasks, ways, shots, queries, gen)
