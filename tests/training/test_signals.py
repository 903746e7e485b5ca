"""Interruptions lose nothing: SIGTERM, SIGUSR1 and SIGINT stop training cleanly, resume continues exactly,
submitit's preemption signal requeues the job, and a killed write's temporary files are removed."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from maml_cli.runs.checkpoints import load_checkpoint, remove_temporaries
from maml_cli.training import RunInfo, signals, train, trainer
from maml_cli.training.signals import Interrupted, StopSignals
from tests.training.training_helpers import BIN, ENV, TINY, config, inspect, records, wandb_runs

# mid-run for a signal sent when the first checkpoint appears (step 20), and the whole run in seconds
ITERATIONS = 200
RUN = ["dataset=sinusoid", *TINY, "log_every=10", "val_every=50", "checkpoint_every=20", f"iterations={ITERATIONS}"]
QUIET = [*TINY, "logger=none", "val_every=10", "checkpoint_every=10", "algorithm.eval_chunk=4", "iterations=30"]
QUIET_ENV = {**ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def start(*args: str, cwd: Path) -> tuple[subprocess.Popen, Path]:
    """``maml-train *args`` in the background; its stderr goes to the returned file."""
    stderr = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [str(BIN / "maml-train"), *args], cwd=cwd, env=QUIET_ENV, stdout=subprocess.DEVNULL, stderr=err
        )
    return process, stderr


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"no {path}"
        time.sleep(0.02)


def learner(job: Path) -> dict:
    return torch.load(job / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["learner"]


def assert_equal(a: dict, b: dict) -> None:
    """The same tensors, bit for bit."""
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    """The learner of the same run, never interrupted."""
    cwd = tmp_path_factory.mktemp("straight")
    process, stderr = start(*RUN, f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert process.wait(timeout=300) == 0, stderr.read_text()
    return learner(cwd / "run")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_the_run_cleanly_and_resume_continues_exactly(tmp_path, straight, signum):
    job = tmp_path / "run"
    process, stderr = start(*RUN, f"hydra.run.dir={job}", cwd=tmp_path)
    wait_for(job / "checkpoints" / "last.pt", process)
    process.send_signal(signum)
    sent = time.monotonic()
    returncode = process.wait(timeout=60)
    print(f"{signum.name}: exited {time.monotonic() - sent:.2f} s after the signal")
    assert returncode == 128 + signum  # 143, 138, 130
    assert time.monotonic() - sent < 20

    step = torch.load(job / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["step"]
    assert 20 <= step < ITERATIONS
    err = stderr.read_text()
    assert "Traceback" not in err and err.strip().splitlines() == [
        f"{signum.name}: stopped after meta-step {step}, saved {job / 'checkpoints' / 'last.pt'}; "
        f"continue with hydra.run.dir={job} resume=true"
    ]
    results = json.loads((job / "results.json").read_text())
    assert (results["status"], results["step"]) == ("interrupted" if signum == signal.SIGINT else "preempted", step)

    [run_dir] = wandb_runs(job)
    run = inspect(run_dir)
    assert (run["state"], run["exit_code"]) == ("failed", 128 + signum)  # closed: neither running nor a success
    assert max(h["item"]["meta/step"] for h in records(run_dir, "history")) == step  # the history reaches it
    assert bool(records(run_dir, "preempting")) == (signum != signal.SIGINT)

    process, stderr = start(*RUN, f"hydra.run.dir={job}", "resume=true", cwd=tmp_path)
    assert process.wait(timeout=300) == 0, stderr.read_text()
    assert f"resuming from {job / 'checkpoints' / 'last.pt'} at step {step}" in (job / "train.log").read_text()
    assert_equal(learner(job), straight)
    assert json.loads((job / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_submitit_job_sent_its_preemption_signal_is_requeued_and_continues_exactly(tmp_path, straight):
    sweep = tmp_path / "sweep"
    process, stderr = start("-m", "launcher=submitit_local", *RUN, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    wait_for(sweep / "0" / "checkpoints" / "last.pt", process)
    os.kill(submitit_task(sweep), signal.SIGUSR2)  # what Slurm sends signal_delay_s before the time limit
    assert process.wait(timeout=300) == 0, stderr.read_text()

    log = (sweep / "0" / "train.log").read_text()
    step = int(re.search(r"SIGUSR2 received: stopping after meta-step (\d+)", log).group(1))
    assert f"resuming from {sweep / '0' / 'checkpoints' / 'last.pt'} at step {step}" in log  # requeued in place
    assert_equal(learner(sweep / "0"), straight)
    first, second = (inspect(r) for r in wandb_runs(sweep / "0"))
    assert (first["state"], first["exit_code"], second["state"]) == ("failed", 128 + signal.SIGUSR2, "finished")
    assert first["run_id"] == second["run_id"]


def submitit_task(folder: Path) -> int:
    """The pid of the submitit task process running a job of the sweep in ``folder``."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "submitit.core._submit" in command and any(str(folder) in arg for arg in command):
            return int(proc.name)
    raise AssertionError(f"no submitit task for {folder}")


@pytest.mark.slow
def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    job, logs = tmp_path / "run", tmp_path / "logs"
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        f"--log-dir={logs}",
        "--redirects=3",
        "--no-python",
        str(BIN / "maml-train"),
        *RUN,
        "meta_batch_size=4",
        "iterations=5000",
        f"hydra.run.dir={job}",
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=QUIET_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(job / "checkpoints" / "last.pt", process)
    os.kill(rank_process(1, str(job)), signal.SIGTERM)  # rank 0 gets none: it learns of it at the next step
    process.wait(timeout=120)

    step = load_checkpoint(job / "checkpoints" / "last.pt")["step"]
    assert 20 <= step < 5000
    for rank in (0, 1):
        [stderr] = logs.glob(f"*/attempt_0/{rank}/stderr.log")
        assert f"SIGTERM: stopped after meta-step {step}, saved" in stderr.read_text()
    assert json.loads((job / "results.json").read_text())["status"] == "preempted"
    run = inspect(wandb_runs(job)[0])
    assert (run["state"], run["exit_code"]) == ("failed", 143)


def rank_process(rank: int, marker: str) -> int:
    """The pid of the torchrun worker of ``rank`` whose command line contains ``marker``."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode()
            environment = (proc / "environ").read_bytes().decode().split("\0")
        except OSError:
            continue
        if marker in command and f"RANK={rank}" in environment and "TORCHELASTIC_RUN_ID" in "".join(environment):
            return int(proc.name)
    raise AssertionError(f"no rank {rank} process for {marker}")


def run_in_process(tmp_path: Path, *overrides: str) -> float:
    return train(config(*QUIET, *overrides), RunInfo(output_dir=tmp_path / "run", overrides=list(overrides)))


def signal_on_call(monkeypatch, call: int, signum: int = signal.SIGTERM) -> None:
    """Scoring's ``call``-th chunk of episodes raises ``signum`` (chunks of 4 of the 8 episodes: 2 per evaluation)."""
    calls, scores = [], trainer.episode_scores

    def scored(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signum)
        return scores(*args, **kwargs)

    monkeypatch.setattr(trainer, "episode_scores", scored)


def test_a_signal_during_validation_stops_before_its_next_chunk_and_resume_validates_that_step(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    run_in_process(tmp_path / "straight")
    signal_on_call(monkeypatch, 3)  # the first chunk of the validation at step 20
    with pytest.raises(Interrupted) as stopped:
        run_in_process(tmp_path)
    assert (stopped.value.step, stopped.value.exit_code, stopped.value.status) == (20, 143, "preempted")
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are restored
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["step"] == 20 and [v["step"] for v in last["history"]] == [10]  # step 20's is left to the resume
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "preempted"

    monkeypatch.undo()
    run_in_process(tmp_path, "resume=true")
    straight, resumed = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("straight/run", "run"))
    assert_equal(straight["learner"], resumed["learner"])
    assert straight["history"] == resumed["history"] and straight["best"] == resumed["best"]


def test_a_signal_during_the_final_test_leaves_the_test_to_the_resumed_run(tmp_path, monkeypatch):
    signal_on_call(monkeypatch, 7, signal.SIGINT)  # validations at 10, 20, 30 (2 chunks each), then the test
    with pytest.raises(Interrupted) as stopped:
        run_in_process(tmp_path)
    assert (stopped.value.step, stopped.value.exit_code, stopped.value.status) == (30, 130, "interrupted")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"] is None

    monkeypatch.undo()
    run_in_process(tmp_path, "resume=true")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "finished" and results["test"]["step"] == results["best"]["step"]


def test_a_repeated_signal_exits_at_once_unless_it_comes_right_after_the_first(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGUSR1)  # at once: the same delivery, passed on by a launcher
        assert (stop.received, stop.signum, exits) == ([signal.SIGUSR1, signal.SIGTERM], signal.SIGUSR1, [])
        monkeypatch.setattr(signals, "REPEAT_S", 0.0)
        signal.raise_signal(signal.SIGUSR1)
        assert exits == [128 + signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) is before


def test_temporary_files_of_a_killed_write_are_removed_when_a_run_starts_in_that_directory(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [
        run / "checkpoints" / ".last.pt.x1y2z3.tmp",
        run / "checkpoints" / ".best.pt.4f3a2b1c.tmp",
        run / ".results.json.0a1b2c3d.tmp",
    ]
    kept = [run / "notes.tmp", run / "checkpoints" / "last.pt.bak"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    assert sorted(remove_temporaries(run)) == sorted(stale)
    for path in stale:
        path.write_bytes(b"partial")
    run_in_process(tmp_path, "iterations=2", "test_tasks=0")
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
