"""``max_time``: a wall-clock budget ends a run as its last step would, and resuming counts the time already spent.

The clock of these runs is a fake one that moves 10 s per meta-step and stands still otherwise, so the
step at which a budget runs out is known exactly, whatever the machine's speed.
"""

import json
import math

import pytest

from maml_cli.config import duration_s
from maml_cli.errors import MamlError
from maml_cli.runs import load_checkpoint
from maml_cli.training import RunInfo, progress, train
from maml_cli.training.trainer import Trainer
from tests.training.training_helpers import TINY, config, inspect, wandb_runs

SLOW = [*TINY, "iterations=100", "log_every=50", "val_every=50", "checkpoint_every=50"]  # none due before 50


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """Training's clock: 10 s more after every meta-step, still otherwise."""
    seconds = [0.0]
    monkeypatch.setattr(progress, "now", lambda: seconds[0])
    meta_step = Trainer._meta_step

    def ten_seconds(self, batch):
        meta_step(self, batch)
        seconds[0] += 10

    monkeypatch.setattr(Trainer, "_meta_step", ten_seconds)
    return seconds


def run(job, *overrides: str) -> dict:
    """Train (or resume, given ``resume=true``) in ``job`` with ``overrides``; its results.json."""
    train(config(*SLOW, *overrides), RunInfo(output_dir=job, overrides=list(overrides)))
    return json.loads((job / "results.json").read_text())


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("90", 90),
        (90, 90),
        ("2.5", 2.5),
        ("90s", 90),
        ("30m", 1800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("00:30:00", 1800),
    ],
)
def test_max_time_is_seconds_units_or_hours_minutes_seconds(value, seconds):
    assert duration_s("max_time", value) == seconds


@pytest.mark.parametrize("value", ["soon", "30x", "-5", "1:2:3", "m"])
def test_a_bad_max_time_is_refused_with_the_valid_forms(value):
    with pytest.raises(MamlError, match=f"max_time='{value}' is not a duration; use seconds \\(90\\), units"):
        config(f"max_time={value}")


def test_a_run_out_of_time_validates_saves_tests_and_finishes_its_wandb_run(tmp_path, clock):
    results = run(tmp_path, "max_time=35s")  # 40 s after step 4: the first step past the budget

    assert (results["status"], results["stopped_by"], results["step"], results["elapsed_s"]) == (
        "finished",
        "max_time",
        4,
        40.0,
    )
    assert [(v["step"], v["elapsed_s"]) for v in results["validation"]] == [(4, 40.0)]
    assert results["best"]["step"] == 4 and results["test"]["step"] == 4 and results["test"]["tasks"] == 8
    last, best = (load_checkpoint(tmp_path / "checkpoints" / f"{kind}.pt") for kind in ("last", "best"))
    assert (last["step"], last["elapsed_s"], best["step"]) == (4, 40.0, 4)

    wandb_run = inspect(wandb_runs(tmp_path)[0])
    assert wandb_run["state"] == "finished"
    assert (wandb_run["summary"]["stopped_by"], wandb_run["summary"]["elapsed_s"]) == ("max_time", 40.0)


def test_a_resumed_run_counts_the_time_already_spent(tmp_path, clock):
    run(tmp_path, "max_time=35s", "logger=none")  # stops at step 4, 40 s spent

    longer = run(tmp_path, "max_time=1m", "logger=none", "resume=true")  # 20 s more: 2 steps
    assert (longer["stopped_by"], longer["step"], longer["elapsed_s"]) == ("max_time", 6, 60.0)
    assert [(v["step"], v["elapsed_s"]) for v in longer["validation"]] == [(4, 40.0), (6, 60.0)]

    again = run(tmp_path, "logger=none", "resume=true")  # the checkpoint's 1m is spent: no step, tested again
    assert (again["status"], again["stopped_by"], again["step"], again["elapsed_s"]) == (
        "finished",
        "max_time",
        6,
        60.0,
    )
    assert again["validation"] == longer["validation"] and again["test"]["step"] == 6


def test_a_run_that_reaches_its_iterations_first_says_so(tmp_path, clock):
    results = run(tmp_path, "max_time=1h", "logger=none", "iterations=3", "val_every=2")
    assert (results["stopped_by"], results["step"], results["elapsed_s"]) == ("iterations", 3, 30.0)
    assert [(v["step"], v["elapsed_s"]) for v in results["validation"]] == [(2, 20.0), (3, 30.0)]


def test_a_schedule_over_max_time_anneals_with_the_budget_not_the_iterations(tmp_path, clock):
    cosine = ["optimizer.schedule=cosine", "optimizer.lr=0.01", "optimizer.min_lr=0", "logger=none"]
    run(tmp_path, "max_time=100s", "optimizer.span=max_time", *cosine)  # 100 iterations, a budget of 10 steps

    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    lr = last["optimizer"]["param_groups"][0]["lr"]
    assert last["step"] == 10  # the fake clock reads 90 s when step 10 moves the schedule: 90% of the budget
    assert lr == pytest.approx(0.01 * (1 + math.cos(0.9 * math.pi)) / 2)


def test_a_schedule_over_max_time_needs_a_max_time():
    with pytest.raises(MamlError, match="optimizer.span=max_time anneals .* set max_time"):
        config("optimizer.span=max_time")


def test_a_budget_of_zero_scores_and_keeps_the_initialisation(tmp_path):
    results = run(tmp_path, "max_time=0", "logger=none")  # on the real clock: any time spent is ≥ 0
    assert (results["status"], results["stopped_by"], results["step"]) == ("finished", "max_time", 0)
    assert [v["step"] for v in results["validation"]] == [0] and results["test"]["step"] == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 0
