"""Helpers of the training tests: tiny configs, the console script, and reading offline W&B runs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from maml_cli.cli.schema import TrainConfig, composed

BIN = Path(sys.executable).parent
# seconds, not minutes: a small meta-batch, few fixed episodes, short adaptation at evaluation
TINY = ["meta_batch_size=2", "val_tasks=8", "test_tasks=8", "algorithm.eval_steps=2", "log_every=5"]
TINY_CONV = ["model.hidden=8", "queries=2", "algorithm.eval_chunk=8"]


def config(*overrides: str) -> TrainConfig:
    """The validated config that ``maml-train *overrides`` would run."""
    return composed("train", overrides)


# tiny models run fastest on one thread, and 2-core test machines are often shared
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def maml_train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "maml-train"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def wandb_runs(job_dir: Path) -> list[Path]:
    """The offline W&B run directories of a job, oldest first."""
    return sorted((job_dir / "wandb").glob("offline-run-*"))


def inspect(run_dir: Path) -> dict:
    """What W&B recorded for an offline run: config, summary, state, name, tags, ... (``wandb leet inspect``)."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def records(run_dir: Path, kind: str) -> list[dict]:
    """The records of one type (``history``, ``run``, ``artifact``, ...) of an offline run."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = (json.loads(line) for line in out.stdout.splitlines() if line.strip())
    return [line[kind] for line in lines if line.get("type") == kind]
