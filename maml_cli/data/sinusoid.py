"""Sinusoid regression (MAML paper, section 5.1): a task is ``y = A sin(x - phase)`` with ``A``, ``phase``
and the inputs ``x`` drawn uniformly from the configured ranges (by default A in [0.1, 5], phase in
[0, pi], x in [-5, 5]). Support: ``shots`` points; query: ``queries`` other points of the same curve.
Nothing is read from disk; the splits differ only in their seeds, and ``ways`` is ignored."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from maml_cli.core.tasks import TaskBatch
from maml_cli.data.config import DatasetConfig
from maml_cli.data.dataset import FewShotDataset
from maml_cli.data.sampler import Plan, Realize, check_positive
from maml_cli.errors import MamlError


@dataclass
class SinusoidConfig(DatasetConfig):
    name: str = "sinusoid"
    amplitude: list[float] = field(default_factory=lambda: [0.1, 5.0])
    phase: list[float] = field(default_factory=lambda: [0.0, math.pi])
    x_range: list[float] = field(default_factory=lambda: [-5.0, 5.0])


def _range(cfg: SinusoidConfig, key: str) -> tuple[float, float]:
    values = [float(v) for v in getattr(cfg, key)]
    if len(values) != 2 or values[0] > values[1]:
        raise MamlError(f"sinusoid {key}={values} must be two numbers [low, high] with low <= high")
    return values[0], values[1]


def _scale(u: Tensor, bounds: tuple[float, float]) -> Tensor:
    return u * (bounds[1] - bounds[0]) + bounds[0]


class Sinusoid(FewShotDataset):
    config = SinusoidConfig
    name = config.name
    task_kind = "regression"
    input_shape = (1,)

    def __init__(self, cfg: SinusoidConfig):
        self.amplitude, self.phase, self.x_range = (_range(cfg, f) for f in ("amplitude", "phase", "x_range"))

    def num_classes(self, split: str) -> int:
        self._check_split(split)
        return 0

    def task_parameters(
        self, split: str, shots: int, queries: int, num_tasks: int, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Amplitudes and phases ``[num_tasks]`` of the curves of ``episodes()`` with the same arguments."""
        plan, _ = self._tasks(self._check_split(split), 1, shots, queries, torch.device("cpu"))
        u = self._episode_plan(plan, self._episode_key(split, 1, shots, queries, seed), num_tasks)
        return _scale(u[:, 0], self.amplitude), _scale(u[:, 1], self.phase)

    def _episode_key(self, split: str, ways: int, shots: int, queries: int, seed: int) -> tuple:
        return self.name, split, shots, queries, seed

    def _tasks(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> tuple[Plan, Realize]:
        """Plan: uniform numbers ``[tasks, 2 + shots + queries]`` for amplitude, phase and the inputs."""
        check_positive(shots=shots, queries=queries)

        def realize(u: Tensor) -> TaskBatch:
            amplitude, phase = _scale(u[:, :1, None], self.amplitude), _scale(u[:, 1:2, None], self.phase)
            x_support, x_query = _scale(u[:, 2:, None], self.x_range).split([shots, queries], dim=1)
            y_support, y_query = (amplitude * torch.sin(x - phase) for x in (x_support, x_query))
            return TaskBatch(x_support.contiguous(), y_support, x_query.contiguous(), y_query).to(device)

        return (lambda tasks, gen: torch.rand(tasks, 2 + shots + queries, generator=gen)), realize
