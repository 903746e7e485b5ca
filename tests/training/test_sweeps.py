"""Multiruns: one W&B run per job in one group, failures contained, launcher and sweeper presets."""

import json

import pytest
import yaml

from tests.training.training_helpers import TINY, inspect, maml_train, wandb_runs

pytestmark = pytest.mark.slow
QUICK = ["iterations=10", *TINY, "val_every=10", "checkpoint_every=10"]


def jobs(sweep_dir):
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_each_job_is_its_own_run_in_the_sweeps_group_and_a_crash_stays_in_its_job(tmp_path):
    sweep = tmp_path / "sweep"  # the first two jobs fail inside the task: their amplitude range is reversed
    result = maml_train(
        "-m", "dataset.amplitude=[5.0,0.1],[0.1,5.0]", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert result.returncode != 0  # the basic sweeper runs every job, then reports the failures
    assert "sinusoid amplitude=[5.0, 0.1] must be two numbers [low, high]" in result.stdout + result.stderr
    runs = [inspect(wandb_runs(job)[0]) for job in jobs(sweep)]
    assert [r["state"] for r in runs] == ["failed", "failed", "finished", "finished"]
    assert [r["config"]["dataset"]["amplitude"] for r in runs] == [[5.0, 0.1]] * 2 + [[0.1, 5.0]] * 2
    assert [r["config"]["seed"] for r in runs] == [0, 1, 0, 1]
    assert len({r["run_id"] for r in runs}) == 4
    assert all(len(wandb_runs(job)) == 1 for job in jobs(sweep))  # no job logged into another's run
    assert runs[2]["name"] == runs[3]["name"] and "seed" not in runs[2]["name"]  # seeds share a name
    groups = {json.loads((job / "results.json").read_text())["wandb"]["group"] for job in jobs(sweep)[2:]}
    assert groups == {"sweep"}  # the sweep directory names the group


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_presets_run_parallel_jobs_in_one_group(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    result = maml_train("-m", f"launcher={launcher}", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = [inspect(wandb_runs(job)[0]) for job in jobs(sweep)]
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert [r["config"]["seed"] for r in runs] == [0, 1] and runs[0]["run_id"] != runs[1]["run_id"]
    groups = {json.loads((job / "results.json").read_text())["wandb"]["group"] for job in jobs(sweep)}
    assert groups == {"sweep"}  # the sweep directory names the group


def test_the_optuna_preset_maximises_the_returned_validation_score(tmp_path):
    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path}/optuna.db"  # persistent studies need sqlalchemy<2 (the sweep extra)
    result = maml_train(
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage={storage}",
        *QUICK,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    scores = [-json.loads((job / "results.json").read_text())["best"]["value"] for job in jobs(sweep)]
    optimum = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert len(scores) == 2 and optimum["best_value"] == pytest.approx(max(scores))
    assert (tmp_path / "optuna.db").stat().st_size > 0
