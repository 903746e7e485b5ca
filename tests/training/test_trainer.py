"""The training loop in-process: exact resume, non-finite losses and scores, resumed settings, results.json."""

import json
import logging
import math

import pytest
import torch

from maml_cli.errors import MamlError
from maml_cli.runs import load_checkpoint
from maml_cli.training import RunInfo, train
from maml_cli.training.resume import config_dict, resumed_config
from tests.training.training_helpers import TINY, config

QUIET = [*TINY, "logger=none", "val_every=10", "checkpoint_every=10"]


def run(tmp_path, name, *overrides, resume_overrides=()):
    info = RunInfo(output_dir=tmp_path / name, overrides=list(resume_overrides))
    return train(config(*QUIET, *overrides), info)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_a_stopped_and_resumed_run_matches_one_straight_through_bit_for_bit(tmp_path):
    run(tmp_path, "straight", "iterations=30")
    run(tmp_path, "stopped", "iterations=10")
    run(tmp_path, "stopped", "iterations=30", "resume=true", resume_overrides=["iterations=30", "resume=true"])
    straight, resumed = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("straight", "stopped"))
    assert straight["step"] == resumed["step"] == 30
    assert_same_tensors(straight["learner"], resumed["learner"])
    assert_same_tensors(straight["optimizer"]["state"], resumed["optimizer"]["state"])
    assert straight["history"] == resumed["history"] and straight["best"] == resumed["best"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # a meta-learning rate of 1e30 sends the weights to ~1e30 in one Adam step: the next loss overflows
    with pytest.raises(MamlError, match="non-finite at step 2"):
        run(tmp_path, "diverges", "optimizer.lr=1e30", "iterations=10", "checkpoint_every=1")
    last = load_checkpoint(tmp_path / "diverges" / "checkpoints" / "last.pt")
    assert last["step"] == 1
    assert all(torch.isfinite(t).all() for t in last["learner"].values())


def test_resuming_keeps_the_trained_settings_and_takes_only_run_control_overrides(caplog):
    saved = config_dict(config("dataset=omniglot", "ways=20", "algorithm.lr=0.1", "iterations=100"))
    overrides = [
        "dataset=omniglot",
        "ways=20",
        "iterations=500",
        "algorithm.lr=0.9",
        "logger=none",
        "dataset.root=/data/omniglot",
        "resume=true",
    ]
    with caplog.at_level(logging.WARNING):
        resumed = resumed_config(saved, config(*overrides), overrides)
    assert (resumed.dataset.name, resumed.ways, resumed.algorithm.lr) == ("omniglot", 20, 0.1)
    assert (resumed.iterations, resumed.logger.mode.value, resumed.dataset.root) == (500, "disabled", "/data/omniglot")
    assert caplog.messages == [caplog.messages[0]] and "ignoring algorithm.lr=0.9 (only" in caplog.text


def test_the_run_dir_holds_checkpoints_and_results_and_the_score_is_returned(tmp_path):
    score = run(tmp_path, "run", "iterations=20", "val_every=10")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "finished" and results["metric"] == "mse"
    assert [v["step"] for v in results["validation"]] == [10, 20]
    assert all(v["ci95"] > 0 for v in results["validation"])
    assert score == -results["best"]["value"] == -min(v["mean"] for v in results["validation"])
    assert results["test"]["tasks"] == 8 and results["test"]["step"] == results["best"]["step"]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["step"] == results["best"]["step"] and best["config"]["iterations"] == 20
    assert set(best) >= {"learner", "optimizer", "scheduler", "rng", "wandb", "history", "config"}


def test_the_seed_fixes_the_run_and_another_seed_changes_it(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run(tmp_path, name, "iterations=10", f"seed={seed}")
    a, b, c = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in "abc")
    assert_same_tensors(a["learner"], b["learner"])
    assert a["history"] == b["history"]
    assert not torch.equal(a["learner"]["model.head.weight"], c["learner"]["model.head.weight"])


def test_a_nan_validation_is_replaced_as_best_by_the_first_finite_one(tmp_path, monkeypatch):
    scores = iter([math.nan, 8.2, 12.4])  # validation MSE at steps 1, 2 and 3

    def fake_scores(learner, episodes, steps=None):
        return torch.full((len(episodes),), next(scores), dtype=torch.float64)

    monkeypatch.setattr("maml_cli.training.trainer.episode_scores", fake_scores)
    cfg = config(*TINY, "logger=none", "iterations=3", "val_every=1", "checkpoint_every=1", "test_tasks=0")
    assert train(cfg, RunInfo(output_dir=tmp_path)) == -8.2

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["best"] == {"metric": "val/mse", "value": 8.2, "step": 2}
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 2
