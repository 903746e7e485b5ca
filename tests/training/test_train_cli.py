"""``maml-train`` end to end: runs on CPU, checkpoints, offline W&B runs read back, kill -9 and resume."""

import json
import signal
import subprocess
import time

import pytest

from maml_cli.runs import load_checkpoint
from tests.training.training_helpers import BIN, ENV, TINY, inspect, maml_train, records, wandb_runs

pytestmark = pytest.mark.slow


def test_sinusoid_trains_checkpoints_and_logs_an_offline_wandb_run(tmp_path):
    job = tmp_path / "run"
    result = maml_train(
        "dataset=sinusoid",
        "iterations=200",
        *TINY,
        "log_every=20",
        "val_every=100",
        "checkpoint_every=100",
        "name=smoke",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(job / "checkpoints" / "last.pt")["step"] == 200
    assert load_checkpoint(job / "checkpoints" / "best.pt")["best"]["metric"] == "val/mse"
    log = (job / "train.log").read_text()
    assert "step 200/200 | loss" in log and "steps/s | ETA" in log and "validation at step 200: mse" in log
    assert "step 20/200 | loss" in result.stdout  # not a terminal: plain progress lines

    [run_dir] = wandb_runs(job)
    run = inspect(run_dir)
    assert run["state"] == "finished" and run["exit_code"] == 0
    assert run["config"]["iterations"] == 200 and run["config"]["dataset"]["name"] == "sinusoid"
    assert run["config"]["hydra"]["overrides"][0] == "dataset=sinusoid"
    assert run["tags"] == ["sinusoid", "10shot", "maml"] and "iterations=200" in run["name"]
    summary = run["summary"]
    assert set(summary["val/mse"]) == {"min", "last"} and set(summary["train/loss"]) == {"min", "last"}
    assert summary["val/mse"]["min"] <= summary["val/mse"]["last"] and "test/mse" in summary
    [meta] = records(run_dir, "run")
    assert (meta["run_group"], meta["job_type"]) == ("smoke", "train")
    history = [h["item"] for h in records(run_dir, "history")]
    train_rows = [h for h in history if "train/loss" in h]
    assert [h["meta/step"] for h in train_rows] == list(range(20, 201, 20))
    assert {
        "train/mse_pre",
        "train/mse_post",
        "train/adaptation_gain",
        "train/support_loss/step_0",
        "train/meta_lr",
        "perf/steps_per_s",
        "perf/tasks_per_s",
        "perf/peak_memory_mb",
    } <= set(train_rows[-1])
    assert [h["meta/step"] for h in history if "val/mse" in h] == [100, 200]
    versions = records(run_dir, "artifact")  # one per checkpoint write (tests/runs/test_artifacts.py)
    assert {e["ref"] for v in versions for e in v["manifest"]["contents"]} == {
        (job / "checkpoints" / n).as_uri() for n in ("best.pt", "last.pt")
    }


def test_omniglot_trains_on_the_real_data(tmp_path, omniglot_overrides):
    job = tmp_path / "run"
    result = maml_train(
        *omniglot_overrides,
        "iterations=50",
        "val_every=25",
        "checkpoint_every=25",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((job / "results.json").read_text())
    assert results["metric"] == "acc" and [v["step"] for v in results["validation"]] == [25, 50]
    assert 0.0 <= results["test"]["mean"] <= 1.0
    run = inspect(wandb_runs(job)[0])
    assert run["state"] == "finished" and run["config"]["ways"] == 5 and run["config"]["model"]["hidden"] == 8
    assert run["tags"] == ["omniglot", "5w1s", "maml"]
    assert set(run["summary"]["val/acc"]) == {"max", "last"} and "train/acc_post" in run["summary"]
    assert run["summary"]["val/acc"]["max"] == results["best"]["value"]


def test_a_killed_run_resumes_from_its_last_checkpoint_to_completion(tmp_path):
    job, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    args = ["iterations=400", *TINY, "log_every=20", "val_every=100", "checkpoint_every=20", f"hydra.run.dir={job}"]
    process = subprocess.Popen(
        [str(BIN / "maml-train"), *args], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = load_checkpoint(last)
    killed_at = killed["step"]
    assert process.returncode == -signal.SIGKILL and killed_at < 400

    result = maml_train(*args, "resume=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming from {last} at step {killed_at}" in (job / "train.log").read_text()
    assert load_checkpoint(last)["step"] == 400
    first, second = wandb_runs(job)  # the killed process's run, then the resumed one: the same W&B run
    resumed = inspect(second)
    assert first.name.endswith(killed["wandb"]["id"]) and resumed["run_id"] == killed["wandb"]["id"]
    assert resumed["state"] == "finished"
