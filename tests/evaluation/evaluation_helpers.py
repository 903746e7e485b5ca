"""Helpers of the evaluation tests: the console scripts, and reading offline W&B runs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models run fastest on one thread of a shared machine


def cli(command: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``maml-<command> *args``; with ``check``, fail the test with its output unless it succeeds."""
    done = subprocess.run(
        [str(BIN / f"maml-{command}"), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert not check or done.returncode == 0, f"maml-{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


def wandb_run(job_dir: Path) -> Path:
    """The one offline W&B run of a job directory."""
    (run,) = (job_dir / "wandb").glob("offline-run-*")
    return run


def inspect(run_dir: Path) -> dict:
    """Config and summary of an offline run (``wandb leet inspect --summary``)."""
    return json.loads(_leet("--summary", run_dir))


def records(run_dir: Path, kind: str) -> list[dict]:
    """The records of one type (``run``, ``history``, ``artifact``, ...) of an offline run."""
    lines = (json.loads(line) for line in _leet(run_dir).splitlines() if line.strip())
    return [line[kind] for line in lines if line.get("type") == kind]


def run_record(run_dir: Path) -> dict:
    """The run record of an offline run: ``run_group``, ``job_type``, ..."""
    return records(run_dir, "run")[0]


def model_versions(run_dir: Path, file: str) -> list[dict]:
    """The versions of a model artifact that an offline run logged (or used) holding ``file`` (best.pt, last.pt)."""
    versions = [a for a in records(run_dir, "artifact") if a["type"] == "model"]
    return [v for v in versions if [c["path"] for c in v["manifest"]["contents"]] == [file]]


def _leet(*args) -> str:
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
