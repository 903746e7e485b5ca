"""Hydra conventions: the config tree at the start of each job, the debug presets, the paths group, relative
paths under hydra.job.chdir=true, and what parallel jobs and their launching process print."""

import csv
import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maml_cli.cli.config_tree import config_tree, show_config
from maml_cli.cli.paths import absolute_paths, exported_paths
from maml_cli.data.sinusoid import SinusoidConfig
from maml_cli.data.storage import data_roots
from tests.evaluation.evaluation_helpers import cli
from tests.evaluation.test_adapt import image
from tests.training.training_helpers import TINY_CONV, config, maml_train, records, wandb_runs

CHDIR = "hydra.job.chdir=true"  # each job runs inside its run directory


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ---------------------------------------------------------------- in-process


def test_the_data_and_cache_roots_default_to_their_environment_variables(monkeypatch):
    monkeypatch.setenv("MAML_DATA_ROOT", "/datasets")
    monkeypatch.setenv("MAML_CACHE_DIR", "/scratch/cache")
    assert vars(config().paths) == {"data_root": "/datasets", "cache_dir": "/scratch/cache", "output_root": "outputs"}
    monkeypatch.delenv("MAML_DATA_ROOT")
    monkeypatch.delenv("MAML_CACHE_DIR")
    assert (config().paths.data_root, config().paths.cache_dir) == (None, None)


def test_the_data_layer_reads_the_paths_group_while_a_command_runs(tmp_path):
    before = os.environ.get("MAML_DATA_ROOT")
    with exported_paths(OmegaConf.create({"data_root": str(tmp_path), "cache_dir": None})):
        assert data_roots(SinusoidConfig())[0] == tmp_path / "sinusoid"
    assert os.environ.get("MAML_DATA_ROOT") == before  # the next job of a multirun starts afresh


def test_relative_paths_are_made_absolute_against_the_starting_directory(tmp_path):
    cfg = OmegaConf.create(
        {"resume": "outputs/run", "dataset": {"root": "~/omniglot"}, "paths": {"data_root": "data", "cache_dir": None}}
    )
    absolute_paths(cfg, tmp_path)
    assert (cfg.resume, cfg.dataset.root) == (str(tmp_path / "outputs" / "run"), str(Path.home() / "omniglot"))
    assert (cfg.paths.data_root, cfg.paths.cache_dir) == (str(tmp_path / "data"), None)
    cfg.resume = "true"  # this job's own checkpoint: not a path
    absolute_paths(cfg, tmp_path)
    assert cfg.resume == "true"


def test_the_config_tree_names_each_groups_choice_and_is_never_wrapped_in_a_log(tmp_path, capsys):
    from hydra import compose, initialize_config_module

    long = "x" * 150  # a long path: wrapped or cut at rich's default 80 columns off a terminal
    with initialize_config_module(config_module="maml_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=omniglot", f"dataset.root={long}"])
    show_config(config_tree(cfg, {"dataset": "omniglot", "algorithm": "maml"}), tmp_path, prefix="[job 3] ")
    saved, printed = (tmp_path / "config_tree.log").read_text().splitlines(), capsys.readouterr().out.splitlines()
    assert printed == [f"[job 3] {line}" for line in saved]
    assert saved[:2] == ["config", "├── ways: 5"]
    assert "├── dataset: omniglot" in saved and "├── algorithm: maml" in saved and "├── model" in saved
    assert f"│       root: {long}" in saved


# ---------------------------------------------------------------- console commands

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def sinusoid_dry_run(tmp_path_factory) -> Path:
    """``maml-train debug=fast`` on the default sinusoid, its outputs under ``paths.output_root=runs``."""
    cwd = tmp_path_factory.mktemp("dry-run")
    done = maml_train("debug=fast", "paths.output_root=runs", cwd=cwd)
    assert done.returncode == 0, done.stderr
    (run,) = (cwd / "runs" / "train").iterdir()
    return run


@slow
def test_debug_fast_is_a_two_step_dry_run_with_tiny_validation_and_test_under_the_output_root(sinusoid_dry_run):
    done = results(sinusoid_dry_run)
    assert (done["status"], done["step"], done["test"]["tasks"]) == ("finished", 2, 2)
    assert [v["step"] for v in done["validation"]] == [2]
    assert not (sinusoid_dry_run / "wandb").exists()  # no W&B run
    tree = (sinusoid_dry_run / "config_tree.log").read_text()
    assert "├── dataset: sinusoid" in tree and "│   iterations: 2" in tree


@slow
def test_a_relative_resume_path_works_with_chdir(sinusoid_dry_run):
    cwd, relative = sinusoid_dry_run.parents[2], sinusoid_dry_run.relative_to(sinusoid_dry_run.parents[2])
    done = maml_train("debug=fast", "iterations=3", CHDIR, f"resume={relative}", "hydra.run.dir=resumed", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert results(cwd / "resumed")["step"] == 3  # continued from step 2 of the dry run
    assert str(sinusoid_dry_run / "checkpoints" / "last.pt") in (cwd / "resumed" / "train.log").read_text()


@pytest.fixture(scope="module")
def omniglot_dry_run(tmp_path_factory, omniglot_root) -> Path:
    """``debug=fast experiment=omniglot_5w1s`` with chdir, the data under a relative ``paths.data_root``."""
    cwd = tmp_path_factory.mktemp("omniglot")
    (cwd / "data").mkdir()
    (cwd / "data" / "omniglot").symlink_to(omniglot_root)
    args = ["debug=fast", "experiment=omniglot_5w1s", "dataset.download=false", "paths.data_root=data", CHDIR]
    done = maml_train(*args, "hydra.run.dir=outputs/fast", cwd=cwd)
    assert done.returncode == 0, done.stderr  # Omniglot not in outputs/fast/data/omniglot: found in ./data
    assert "└── paths: default" in done.stdout  # the tree, printed at the start
    return cwd


@slow
def test_debug_fast_runs_a_paper_preset_finding_its_data_by_a_relative_root_under_chdir(omniglot_dry_run):
    done = results(omniglot_dry_run / "outputs" / "fast")
    assert (done["step"], done["test"]["tasks"], done["config"]["meta_batch_size"]) == (2, 2, 32)
    assert done["config"]["paths"]["data_root"] == str(omniglot_dry_run / "data")


@slow
def test_eval_and_adapt_jobs_save_their_config_tree_and_take_relative_paths_under_chdir(omniglot_dry_run):
    cwd = omniglot_dry_run
    relative = ["run=outputs/fast", "paths.data_root=data", "logger=none", CHDIR]
    cli("eval", *relative, "tasks=2", "hydra.run.dir=outputs/eval", cwd=cwd)
    for k in range(2):
        image(cwd / "support" / f"class{k}" / "0.png", (28, 28), seed=k)
    image(cwd / "query" / "q.png", (28, 28))
    cli("adapt", *relative, "support=support", "query=query", "hydra.run.dir=outputs/adapt", cwd=cwd)

    assert "mean" in json.loads((cwd / "outputs" / "eval" / "eval.json").read_text())["final"]
    with (cwd / "outputs" / "adapt" / "predictions.csv").open() as file:
        assert [row["file"] for row in csv.DictReader(file)] == ["q.png"]
    for job in ("eval", "adapt"):
        tree = (cwd / "outputs" / job / "config_tree.log").read_text()
        assert tree.startswith("config\n") and f"run: {cwd / 'outputs' / 'fast'}\n" in tree


@slow
def test_debug_overfit_drives_the_training_query_accuracy_towards_one(tmp_path, omniglot_root):
    tiny = ["dataset=omniglot", f"dataset.root={omniglot_root}", "dataset.download=false", "meta_batch_size=2"]
    done = maml_train("debug=overfit", *tiny, *TINY_CONV, "logger.mode=offline", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    history = [h["item"] for h in records(wandb_runs(tmp_path / "run")[0], "history")]
    accuracy = [h["train/query_acc"] for h in history if "train/query_acc" in h]
    assert len(accuracy) == 10  # steps 10, 20, ..., 100
    # memorising one meta-batch reaches 1.0 by step 90 on this tiny Conv4; fresh batches stay near 0.3,
    # and the first 10 steps average below 0.5: the margins dwarf any rounding across CPUs
    assert accuracy[0] < 0.6 and accuracy[-1] >= 0.9


@slow
def test_parallel_joblib_jobs_prefix_their_lines_and_the_parent_prints_each_result(tmp_path):
    done = maml_train("-m", "launcher=joblib", "seed=0,1", "debug=fast", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for job in (0, 1):
        assert f"[job {job}] config" in lines  # the tree
        assert any(line.startswith(f"[job {job}][") and "validation at step 2" in line for line in lines)
        value = -results(tmp_path / "sweep" / str(job))["best"]["value"]  # the job returns −MSE
        assert f"[job {job}] seed={job}: COMPLETED, returned {value:.6g}" in lines


@slow
def test_the_submitit_parent_prints_what_each_job_returned_or_why_it_failed(tmp_path):
    done = maml_train(
        "-m", "launcher=submitit_local", "iterations=2,-1", "debug=fast", "hydra.sweep.dir=s", cwd=tmp_path
    )
    assert done.returncode != 0  # a job failed
    value = -results(tmp_path / "s" / "0")["best"]["value"]
    assert f"[job 0] iterations=2: COMPLETED, returned {value:.6g}" in done.stdout.splitlines()
    assert "[job 1] iterations=-1: FAILED: iterations=-1 is out of range: it must be >= 0" in done.stdout.splitlines()
