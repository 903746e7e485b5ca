"""``maml-train`` under torchrun: 2 CPU processes over gloo train exactly like one process.

Every rank draws the same meta-batch and meta-trains on its half; the all-reduced meta-gradient is
the single-process one up to the order of the float32 sums, so the weights after a few meta-steps
agree to rtol=1e-5, atol=1e-6 (measured: max abs difference ~3e-8 after 8-10 Adam steps).
"""

import json
import subprocess

import pytest
import torch

from maml_cli.runs import load_checkpoint
from maml_cli.training import RunInfo, train
from tests.training.training_helpers import BIN, ENV, config, inspect, records, wandb_runs

pytestmark = pytest.mark.slow

# 8 meta-steps of 4 tasks (2 per process); 6 validation and 5 test episodes (an uneven split: 3 + 2)
ARGS = [
    "dataset=sinusoid",
    "iterations=8",
    "meta_batch_size=4",
    "val_tasks=6",
    "test_tasks=5",
    "algorithm.eval_steps=2",
    "log_every=2",
    "val_every=2",
    "checkpoint_every=2",
]
# each rank asks Hydra for its own run dir, as a `${now:...}` that ticks between two ranks' starts would
RANK_DIR = "hydra.run.dir={}/run_${{oc.env:RANK}}"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def torchrun(*args: str, cwd, nproc: int = 2, log_dir=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (a free rendezvous port on localhost) of the installed ``maml-train``."""
    logs = [f"--log-dir={log_dir}", "--redirects=3"] if log_dir else []
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        f"--nproc_per_node={nproc}",
        *logs,
        "--no-python",
        str(BIN / "maml-train"),
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same run in one process: its run dir."""
    job = tmp_path_factory.mktemp("single") / "run"
    torch.set_num_threads(1)
    train(config(*ARGS, "logger=none"), RunInfo(output_dir=job))
    return job


def assert_same_training(job, reference):
    got, want = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (job, reference))
    assert got["step"] == want["step"] == 8
    assert got["learner"].keys() == want["learner"].keys()
    for name in want["learner"]:
        torch.testing.assert_close(got["learner"][name], want["learner"][name], **TOLERANCE, msg=name)
    assert [v["step"] for v in got["history"]] == [2, 4, 6, 8]
    assert [v["mean"] for v in got["history"]] == pytest.approx([v["mean"] for v in want["history"]], rel=1e-5)
    assert got["best"]["step"] == want["best"]["step"]


def test_two_processes_make_the_updates_of_one_and_rank_0_alone_writes(tmp_path, single):
    result = torchrun(*ARGS, RANK_DIR.format(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    job = tmp_path / "run_0"
    assert not (tmp_path / "run_1").exists()  # rank 1 used rank 0's directory and removed its own
    assert_same_training(job, single)

    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    results, expected = (json.loads((d / "results.json").read_text()) for d in (job, single))
    assert results["status"] == "finished" and results["test"]["tasks"] == 5
    assert results["test"]["mean"] == pytest.approx(expected["test"]["mean"], rel=1e-5)  # 3 + 2 episodes gathered
    log = (job / "train.log").read_text()
    assert log.count("validation at step 8") == 1 and "2 processes, 2 tasks each per meta-step" in log

    [run_dir] = wandb_runs(job)  # one W&B run, rank 0's
    run = inspect(run_dir)
    assert run["state"] == "finished" and run["config"]["meta_batch_size"] == 4
    assert run["summary"]["val/mse"]["last"] == pytest.approx(expected["validation"][-1]["mean"], rel=1e-5)
    history = [h["item"] for h in records(run_dir, "history")]
    assert [h["meta/step"] for h in history if "train/loss" in h] == [2, 4, 6, 8]


def test_a_torchrun_job_resumes_from_its_checkpoint(tmp_path, single):
    first = torchrun(*ARGS, "iterations=4", "logger=none", RANK_DIR.format(tmp_path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run_0" / "checkpoints" / "last.pt")["step"] == 4
    resumed = torchrun(*ARGS, "logger=none", "resume=true", RANK_DIR.format(tmp_path), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 4" in (tmp_path / "run_0" / "train.log").read_text()
    assert_same_training(tmp_path / "run_0", single)


def test_a_meta_batch_that_does_not_split_evenly_is_refused_before_training(tmp_path):
    result = torchrun(*ARGS, "meta_batch_size=3", RANK_DIR.format(tmp_path), cwd=tmp_path, log_dir=tmp_path / "logs")
    assert result.returncode != 0
    [rank0] = (tmp_path / "logs").glob("*/attempt_0/0/stderr.log")
    assert rank0.read_text().strip() == (
        "Error: meta_batch_size=3 is not divisible by the 2 processes; use a multiple of 2, e.g. [2, 4, 6, 8]"
    )  # one line, no traceback
    assert not (tmp_path / "run_0" / "checkpoints").exists() and not (tmp_path / "run_0" / "wandb").exists()
