"""What the bench runs: the paper presets' Omniglot workloads, the max-pool workload with MAML's variants A/B/C,
and their task batches."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from maml_cli.cli.schema import TrainConfig, composed
from maml_cli.core import InnerLoopConfig, OptimizerConfig
from maml_cli.core.tasks import TaskBatch
from maml_cli.data import OmniglotConfig, build_dataset


@dataclass(frozen=True)
class Workload:
    """A meta-batch's shape and the Conv4 that runs it; a ``preset``'s own inner loop is its one variant."""

    ways: int
    shots: int
    queries: int
    tasks: int
    pooling: str = "max"
    hidden: int = 64
    preset: str | None = None  # a conf/experiment name


ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("omniglot_5w1s", "omniglot_5w5s", "omniglot_20w1s", "omniglot_20w5s")  # conf/experiment/
MAXPOOL = {
    "omniglot-5w1s-q15-mb32": Workload(ways=5, shots=1, queries=15, tasks=32),
    "omniglot-20w1s-q15-mb16": Workload(ways=20, shots=1, queries=15, tasks=16),
}
ALIASES = {"5w": ["omniglot-5w1s-q15-mb32"], "20w": ["omniglot-20w1s-q15-mb16"], "presets": list(PRESETS)}
VARIANTS = {
    "A": dict(steps=1, first_order=False),
    "B": dict(steps=1, first_order=True),
    "C": dict(steps=5, first_order=False),
}
PRESET_VARIANT = "preset"  # a preset workload's only variant: the preset's algorithm settings
INNER_LR, OUTER_LR = InnerLoopConfig.lr, OptimizerConfig.lr  # the schemas' defaults: MAML's Omniglot 5-way
DATA_ROOT = Path(os.environ.get("MAML_DATA_ROOT", ROOT.parent / "shared" / "data")) / "omniglot"  # as the tests


def workload_names(names: str) -> list[str]:
    """The workloads of a comma list of names or aliases (5w, 20w, presets); ``all`` is every one."""
    if "all" in names.split(","):
        return [*PRESETS, *MAXPOOL]
    return [name for w in names.split(",") if w for name in ALIASES.get(w, [w])]


@cache
def preset_config(name: str) -> TrainConfig:
    """The config that ``maml-train experiment=<name>`` runs."""
    return composed("train", [f"experiment={name}"])


def workload(name: str) -> Workload:
    """The workload of a name: a max-pool one, or a preset's (its ways, shots, queries, meta-batch and Conv4)."""
    if name in MAXPOOL:
        return MAXPOOL[name]
    c = preset_config(name)
    return Workload(c.ways, c.shots, c.queries, c.meta_batch_size, c.model.pooling.value, c.model.hidden, name)


def variants(name: str, requested: list[str]) -> list[str]:
    """The variants timed on a workload: a preset's own, else the ``requested`` A/B/C."""
    return [PRESET_VARIANT] if workload(name).preset else [v for v in requested if v in VARIANTS]


def inner_config(name: str, variant: str, engine: str = "auto") -> InnerLoopConfig:
    """The inner loop of ``variant`` on a workload: the preset's, or MAML's variant at the bench's inner lr."""
    preset = workload(name).preset
    if preset:
        return dataclasses.replace(preset_config(preset).algorithm, engine=engine)
    v = VARIANTS[variant]
    return InnerLoopConfig(steps=v["steps"], lr=INNER_LR, first_order=v["first_order"], engine=engine)


def outer_lr(name: str) -> float:
    """The outer Adam's learning rate: the preset's, else the schema's default."""
    preset = workload(name).preset
    return preset_config(preset).optimizer.lr if preset else OUTER_LR


def omniglot():
    """The Omniglot dataset of ``maml_cli.data`` (None when it cannot be built here)."""
    try:
        return build_dataset(OmniglotConfig(root=DATA_ROOT, download=False))
    except Exception as error:
        print(f"  (Omniglot unavailable: {type(error).__name__}: {str(error).splitlines()[0][:120]})", flush=True)
        return None


def task_batch(name: str, device: torch.device, dataset=None, seed: int = 0, dtype=torch.float32) -> TaskBatch:
    """One meta-batch: real Omniglot training tasks when ``dataset`` is given, else random ``dtype`` images."""
    w = workload(name)
    if dataset is not None:
        batch = dataset.sampler("train", w.ways, w.shots, w.queries, seed).sample(w.tasks)
    else:
        g = torch.Generator().manual_seed(seed)

        def labels(per: int) -> torch.Tensor:
            return torch.arange(w.ways).repeat_interleave(per).expand(w.tasks, -1).contiguous()

        batch = TaskBatch(
            torch.rand(w.tasks, w.ways * w.shots, 1, 28, 28, generator=g, dtype=dtype),
            labels(w.shots),
            torch.rand(w.tasks, w.ways * w.queries, 1, 28, 28, generator=g, dtype=dtype),
            labels(w.queries),
        )
    return batch.to(device)
