"""What the bench runs: the Omniglot workloads, MAML's variants A/B/C, and their task batches."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from maml_cli.core import InnerLoopConfig, OptimizerConfig
from maml_cli.core.tasks import TaskBatch
from maml_cli.data import OmniglotConfig, build_dataset

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "omniglot-5w1s-q15-mb32": dict(ways=5, shots=1, queries=15, tasks=32),
    "omniglot-20w1s-q15-mb16": dict(ways=20, shots=1, queries=15, tasks=16),
}
ALIASES = {"5w": "omniglot-5w1s-q15-mb32", "20w": "omniglot-20w1s-q15-mb16"}
VARIANTS = {
    "A": dict(steps=1, first_order=False),
    "B": dict(steps=1, first_order=True),
    "C": dict(steps=5, first_order=False),
}
INNER_LR, OUTER_LR = InnerLoopConfig.lr, OptimizerConfig.lr  # the schemas' defaults: MAML's Omniglot 5-way
DATA_ROOT = Path(os.environ.get("MAML_DATA_ROOT", ROOT.parent / "shared" / "data")) / "omniglot"  # as the tests


def workload_names(names: str) -> list[str]:
    """The workloads of a comma list of names or aliases; ``all`` is every one."""
    return list(WORKLOADS) if "all" in names.split(",") else [ALIASES.get(w, w) for w in names.split(",") if w]


def omniglot():
    """The Omniglot dataset of ``maml_cli.data`` (None when it cannot be built here)."""
    try:
        return build_dataset(OmniglotConfig(root=DATA_ROOT, download=False))
    except Exception as error:
        print(f"  (Omniglot unavailable: {type(error).__name__}: {str(error).splitlines()[0][:120]})", flush=True)
        return None


def task_batch(workload: str, device: torch.device, dataset=None, seed: int = 0, dtype=torch.float32) -> TaskBatch:
    """One meta-batch: real Omniglot training tasks when ``dataset`` is given, else random ``dtype`` images."""
    w = WORKLOADS[workload]
    if dataset is not None:
        batch = dataset.sampler("train", w["ways"], w["shots"], w["queries"], seed).sample(w["tasks"])
    else:
        g = torch.Generator().manual_seed(seed)

        def labels(per: int) -> torch.Tensor:
            return torch.arange(w["ways"]).repeat_interleave(per).expand(w["tasks"], -1).contiguous()

        batch = TaskBatch(
            torch.rand(w["tasks"], w["ways"] * w["shots"], 1, 28, 28, generator=g, dtype=dtype),
            labels(w["shots"]),
            torch.rand(w["tasks"], w["ways"] * w["queries"], 1, 28, 28, generator=g, dtype=dtype),
            labels(w["queries"]),
        )
    return batch.to(device)
