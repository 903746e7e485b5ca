"""No run is lost or clobbered: a directory per job, a lock while a process uses it, and environment
faults (full disk, read-only directory, bad seed, unfit checkpoint) reported in one line, exit 1,
with everything written earlier left intact."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from maml_cli.cli.rundir import LOCK, lock_run_dir
from maml_cli.config import EvalConfig
from maml_cli.errors import MamlError
from maml_cli.runs import load_checkpoint, save_checkpoint
from maml_cli.training import RunInfo, train
from tests.training.training_helpers import BIN, ENV, TINY, config, maml_train

# 4 meta-steps of a tiny sinusoid run, no W&B, checkpoints and validation every 2 steps
QUICK = [*TINY, "test_tasks=0", "logger=none", "iterations=4", "val_every=2", "checkpoint_every=2"]
# what a chmod 0o500 directory does to a non-root process, for tests run as root (where chmod stops nothing):
# no new names in the directory $READ_ONLY; the files already there stay writable
READ_ONLY_AS_ROOT = """
import errno, os
def _refused(path):
    path = os.path.abspath(path)
    return os.path.dirname(path) == os.environ["READ_ONLY"] and not os.path.exists(path)
def _deny(path):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
_open, _mkdir = os.open, os.mkdir
os.open = lambda path, flags, *a, **k: (_deny(path) if flags & os.O_CREAT and _refused(path)
                                        else _open(path, flags, *a, **k))
os.mkdir = lambda path, *a, **k: _deny(path) if _refused(path) else _mkdir(path, *a, **k)
"""
FULL_DISK = """
import errno, os
def _full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = _full
"""
RUN_DIR_NAME = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}"  # start time, then the job's own token


def maml_train_with(prelude: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``maml-train *args`` in a Python that first runs ``prelude`` (which simulates a fault)."""
    code = f"{prelude}\nimport sys\nfrom maml_cli.cli.train import main\nsys.argv = ['maml-train', *{list(args)!r}]\n"
    return subprocess.run(
        [sys.executable, "-c", code + "sys.exit(main())"],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def train_quietly(job: Path, *overrides: str) -> None:
    """A QUICK run into ``job``, in this process."""
    torch.set_num_threads(1)
    train(config(*QUICK, *overrides), RunInfo(output_dir=job))


def snapshot(job: Path) -> dict[str, bytes]:
    """Every checkpoint and results.json of a run dir, as bytes."""
    files = [*(job / "checkpoints").glob("*.pt"), job / "results.json"]
    return {str(path.relative_to(job)): path.read_bytes() for path in files if path.is_file()}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr  # no traceback
    return lines[0]


# ---------------------------------------------------------------- a directory of its own


def test_each_composed_job_gets_its_own_timestamped_dir_resolved_once():
    with initialize_config_module(config_module="maml_cli.conf", version_base="1.3"):
        first, second = (compose(config_name="train", return_hydra_config=True) for _ in range(2))
    assert first.hydra.run.dir == first.hydra.run.dir  # the same each time a job asks
    assert first.hydra.run.dir != second.hydra.run.dir
    for job in (first, second):
        assert re.fullmatch(rf"outputs/app/{RUN_DIR_NAME}", job.hydra.run.dir)  # the compose API's job name
        assert re.fullmatch(rf"outputs/app-multirun/{RUN_DIR_NAME}", job.hydra.sweep.dir)


@pytest.mark.slow
def test_two_jobs_started_together_keep_complete_outputs_in_their_own_dirs(tmp_path):
    jobs = [
        subprocess.Popen(
            [str(BIN / "maml-train"), *QUICK, f"seed={seed}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr
    dirs = sorted((tmp_path / "outputs" / "train").iterdir())
    assert len(dirs) == 2 and all(re.fullmatch(RUN_DIR_NAME, d.name) for d in dirs)
    seeds = []
    for job in dirs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "finished" and results["step"] == 4
        assert load_checkpoint(job / "checkpoints" / "last.pt")["config"]["seed"] == results["seed"]
        assert (job / "train.log").read_text().count(" - training ") == 1  # no other job's lines
        seeds.append(results["seed"])
    assert sorted(seeds) == [0, 1]


# ---------------------------------------------------------------- one live process per directory


def test_a_locked_dir_is_refused_until_its_process_dies(tmp_path):
    job = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from maml_cli.cli.rundir import lock_run_dir; lock_run_dir(Path(sys.argv[1])); "
            "print('locked', flush=True); time.sleep(300)",
            str(job),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(MamlError) as refused:
            lock_run_dir(job)
        assert str(refused.value) == (
            f"hydra.run.dir={job} is in use by another running process (pid {holder.pid}); "
            "wait for it to end, or choose another hydra.run.dir"
        )
    finally:
        holder.kill()  # SIGKILL: no clean-up, the kernel drops the lock
        holder.wait()
    fd = lock_run_dir(job)  # a killed run's dir can be resumed at once
    assert (job / LOCK).read_text() == f"{os.getpid()}\n"
    os.close(fd)


@pytest.mark.slow
def test_a_second_process_on_a_live_run_dir_is_refused_and_the_first_finishes_intact(tmp_path):
    job = tmp_path / "run"
    args = [*QUICK, "iterations=20", f"hydra.run.dir={job}"]
    first = subprocess.Popen(
        [str(BIN / "maml-train"), *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ((job / LOCK).is_file() and (job / LOCK).read_text() == f"{first.pid}\n"):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # it holds the lock: keep it alive and busy while the others try
    try:
        for again in ([], ["resume=true"]):  # the same dir twice; resuming a run that is still training
            assert one_line_error(maml_train(*args, *again, cwd=tmp_path)) == (
                f"Error: hydra.run.dir={job} is in use by another running process (pid {first.pid}); "
                "wait for it to end, or choose another hydra.run.dir"
            )
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "finished" and load_checkpoint(job / "checkpoints" / "last.pt")["step"] == 20
    assert (job / "train.log").read_text().count(" - training ") == 1
    assert "resume=true" not in (job / ".hydra" / "overrides.yaml").read_text()  # the refused never wrote here


# ---------------------------------------------------------------- environment faults


@pytest.mark.slow
def test_a_full_disk_stops_training_with_one_message_and_keeps_what_was_written(tmp_path):
    job = tmp_path / "run"
    train_quietly(job)
    before = snapshot(job)
    line = one_line_error(
        maml_train_with(FULL_DISK, *QUICK, "iterations=8", "resume=true", f"hydra.run.dir={job}", cwd=tmp_path)
    )
    written = rf"{re.escape(str(job))}/(checkpoints/\w+\.pt|results\.json)"  # whichever is written first
    assert re.fullmatch(
        rf"Error: cannot write {written}: No space left on device; any earlier \S+ is left as it was", line
    ), line
    assert snapshot(job) == before
    assert not list(job.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["run dir", "parent"])
def test_a_read_only_output_dir_is_reported_and_earlier_runs_are_kept(tmp_path, read_only):
    runs = tmp_path / "runs"
    job = runs / "run"
    assert maml_train(*QUICK, f"hydra.run.dir={job}", cwd=tmp_path).returncode == 0
    before = snapshot(job)
    denied, target = (job, job) if read_only == "run dir" else (runs, runs / "new")  # resume in place, or afresh
    args = [*QUICK, "iterations=8", f"hydra.run.dir={target}", *(["resume=true"] if target == job else [])]
    if os.geteuid() == 0:
        result = maml_train_with(READ_ONLY_AS_ROOT, *args, cwd=tmp_path, env={**ENV, "READ_ONLY": str(denied)})
    else:
        denied.chmod(0o500)
        try:
            result = maml_train(*args, cwd=tmp_path)
        finally:
            denied.chmod(0o755)
    line = one_line_error(result)
    if read_only == "parent":  # refused before anything is written
        assert line == (
            f"Error: cannot write into hydra.run.dir={target}: Permission denied; choose a writable hydra.run.dir"
        )
        assert not target.exists()
    else:  # the lock file, train.log, .hydra/ and checkpoints/ exist; results.json needs a new (temporary) name
        assert line == (
            f"Error: cannot write {job}/results.json: Permission denied; any earlier results.json is left as it was"
        )
    after = snapshot(job)
    assert after["checkpoints/last.pt"] == before["checkpoints/last.pt"]
    assert after["results.json"] == before["results.json"]
    assert load_checkpoint(job / "checkpoints" / "best.pt")["step"] >= 4  # intact (or a better one from step 6)


def test_seeds_outside_numpy_and_torch_range_are_refused():
    for seed in (-1, 2**32):
        with pytest.raises(MamlError, match=rf"^seed={seed} is out of range: it must be >= 0 and <= 4294967295$"):
            config(f"seed={seed}")
    config(f"seed={2**32 - 1}")
    with pytest.raises(MamlError, match=r"^seed=-1 is out of range: it must be >= 0 and <= 4294967295$"):
        EvalConfig(checkpoint="best.pt", seed=-1)


@pytest.mark.slow
def test_a_negative_seed_exits_with_one_line(tmp_path):
    assert one_line_error(maml_train("seed=-1", "logger=none", cwd=tmp_path)) == (
        "Error: seed=-1 is out of range: it must be >= 0 and <= 4294967295"
    )


@pytest.mark.slow
def test_resuming_an_unfit_checkpoint_names_it_and_what_is_wrong(tmp_path):
    good = tmp_path / "good"
    train_quietly(good)
    state = load_checkpoint(good / "checkpoints" / "last.pt")
    unfit, partial = tmp_path / "bad" / "unfit.pt", tmp_path / "bad" / "partial.pt"
    wider = {**state["config"], "model": {**state["config"]["model"], "hidden": [64, 64]}}  # weights are 40 wide
    save_checkpoint(unfit, {**state, "config": wider})
    save_checkpoint(partial, {key: value for key, value in state.items() if key != "learner"})
    before = snapshot(good)

    line = one_line_error(maml_train(*QUICK, f"resume={unfit}", f"hydra.run.dir={tmp_path / 'new'}", cwd=tmp_path))
    assert line == (
        f"Error: checkpoint {unfit}: its weights do not fit the model of its own config "
        "(name=mlp hidden=[64, 64]): model.body.1.weight has shape [40, 1], the model's [64, 1]; "
        "model.body.1.bias has shape [40], the model's [64]; "
        "model.body.3.weight has shape [40, 40], the model's [64, 64]; ..."
    )
    with pytest.raises(MamlError) as missing:
        train_quietly(tmp_path / "new", f"resume={partial}")
    assert str(missing.value) == (
        f"checkpoint {partial} cannot be resumed: it lacks learner (a training checkpoint "
        "holds config, learner, optimizer, scheduler, step, best, rng, wandb, history)"
    )
    assert snapshot(good) == before and not (tmp_path / "new" / "checkpoints").exists()
