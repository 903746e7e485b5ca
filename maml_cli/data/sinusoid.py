"""Sinusoid regression (MAML paper, section 5.1): a task is ``y = A sin(x - phase)`` with ``A``, ``phase``
and the inputs ``x`` drawn uniformly from the configured ranges (by default A in [0.1, 5], phase in
[0, pi], x in [-5, 5]). Support: ``shots`` points; query: ``queries`` other points of the same curve.
Nothing is read from disk; the splits differ only in their seeds, and ``ways`` is ignored."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from maml_cli.data.dataset import FewShotDataset
from maml_cli.data.sampler import Draw, check_positive, generator, stable_seed
from maml_cli.data.tasks import TaskBatch
from maml_cli.errors import MamlError


def _range(cfg: Any, field: str) -> tuple[float, float]:
    values = [float(v) for v in getattr(cfg, field)]
    if len(values) != 2 or values[0] > values[1]:
        raise MamlError(f"sinusoid {field}={values} must be two numbers [low, high] with low <= high")
    return values[0], values[1]


def _uniform(bounds: tuple[float, float], shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen) * (bounds[1] - bounds[0]) + bounds[0]


class Sinusoid(FewShotDataset):
    name = "sinusoid"
    task_kind = "regression"
    input_shape = (1,)

    def __init__(self, cfg: Any):
        self.amplitude, self.phase, self.x_range = (_range(cfg, f) for f in ("amplitude", "phase", "x_range"))

    def num_classes(self, split: str) -> int:
        self._check_split(split)
        return 0

    def task_parameters(self, split: str, shots: int, queries: int, num_tasks: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Amplitudes and phases ``[num_tasks]`` of the curves of ``episodes()`` with the same arguments."""
        check_positive(shots=shots, queries=queries, num_tasks=num_tasks)
        key = self._episode_key(self._check_split(split), 0, shots, queries, seed)
        amplitude, phase = zip(*(self._parameters(1, generator(stable_seed(*key, i))) for i in range(num_tasks)))
        return torch.cat(amplitude), torch.cat(phase)

    def _episode_key(self, split: str, ways: int, shots: int, queries: int, seed: int) -> tuple:
        return self.name, split, shots, queries, seed

    def _parameters(self, tasks: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        return _uniform(self.amplitude, (tasks,), gen), _uniform(self.phase, (tasks,), gen)

    def _drawer(self, split: str, ways: int, shots: int, queries: int, device: torch.device) -> Draw:
        check_positive(shots=shots, queries=queries)

        def draw(tasks: int, gen: torch.Generator) -> TaskBatch:
            amplitude, phase = (p.view(tasks, 1, 1) for p in self._parameters(tasks, gen))
            x_support, x_query = (_uniform(self.x_range, (tasks, n, 1), gen) for n in (shots, queries))
            y_support, y_query = (amplitude * torch.sin(x - phase) for x in (x_support, x_query))
            return TaskBatch(x_support, y_support, x_query, y_query).to(device)

        return draw
