"""Run identity over starts: a run resumed in place stays the same run (name, group, W&B id); a fork and an
``init_from`` run are new runs that record their parent, in their W&B config and in results.json."""

import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from maml_cli.errors import MamlError
from maml_cli.runs import load_checkpoint
from maml_cli.runs.tracking import run_name
from maml_cli.runtime import build_learner
from maml_cli.training import RunInfo, train
from maml_cli.training.resume import Start, find_start, init_weights
from tests.training.training_helpers import TINY, config, inspect, maml_train, records, wandb_runs

# a tiny sinusoid run tracked offline: validation and last.pt every 2 steps
QUICK = [*TINY, "test_tasks=0", "val_every=2", "checkpoint_every=2"]
PARENT = ["shots=5", "iterations=4"]


def unnamed() -> list[str]:
    """The keys that name no run, as ``maml-train`` reads them from its Hydra config."""
    with initialize_config_module(config_module="maml_cli.conf", version_base="1.3"):
        hydra = compose(config_name="train", return_hydra_config=True).hydra
    return list(hydra.job.config.override_dirname.exclude_keys)


def train_in(job, *overrides, unnamed_keys=()):
    """``maml-train *overrides`` into ``job``, in this process, as the CLI would call it."""
    torch.set_num_threads(1)
    info = RunInfo(output_dir=job, overrides=list(overrides), unnamed=list(unnamed_keys))
    return train(config(*QUICK, *overrides), info)


def results(job) -> dict:
    return json.loads((job / "results.json").read_text())


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished 4-step run: its directory, and its W&B run as wandb reads it back."""
    job = tmp_path_factory.mktemp("lineage") / "parent"
    train_in(job, *PARENT, unnamed_keys=unnamed())
    [run] = wandb_runs(job)
    return job, inspect(run)


def test_run_names_leave_out_the_seed_and_the_keys_that_do_not_change_what_is_trained():
    given = ["launcher=joblib", "sweep=ways_shots", "debug=fast", "paths.data_root=/data", "logger.tags=[a]"]
    given += ["resume=true", "init_from=runs/a", "seed=1", "device=cpu", "val_every=5", "ways=20", "iterations=9"]
    assert run_name(given, unnamed()) == "iterations=9,ways=20"


@pytest.mark.slow
def test_a_resumed_run_keeps_its_name_group_and_id(tmp_path):
    job = tmp_path / "run"
    first = [*QUICK, *PARENT, "logger.tags=[a]", f"hydra.run.dir={job}"]
    assert maml_train(*first, cwd=tmp_path).returncode == 0
    again = ["resume=true", "iterations=6", "algorithm.lr=0.9", f"hydra.run.dir={job}"]  # algorithm.lr is ignored
    result = maml_train(*again, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    runs = [(inspect(run), records(run, "run")[0]) for run in wandb_runs(job)]
    assert len(runs) == 2  # the first start's fragment and the resumed one, merged by W&B on sync
    (started, started_meta), (resumed, resumed_meta) = runs
    assert resumed["run_id"] == started["run_id"]
    assert (
        resumed["name"]
        == started["name"]
        == "algorithm.eval_steps=2,iterations=4,meta_batch_size=2,shots=5,val_tasks=8"
    )
    assert resumed_meta["run_group"] == started_meta["run_group"] == "sinusoid-5shot"  # dataset and task, no ways
    assert "5shot" in resumed["tags"]
    given = [o for o in first if not o.startswith("hydra.")], [o for o in again if not o.startswith("hydra.")]
    assert resumed["config"]["starts"] == [{"overrides": given[0], "step": 0}, {"overrides": given[1], "step": 4}]
    assert resumed["config"]["lineage"] is None and resumed["config"]["iterations"] == 6
    saved = results(job)
    assert saved["run"] == started["name"] and saved["wandb"]["id"] == started["run_id"]
    assert saved["wandb"]["starts"] == resumed["config"]["starts"] and saved["step"] == 6


def test_a_fork_is_a_new_run_in_its_own_dir_that_records_its_parent(tmp_path, parent):
    parent_dir, parent_run = parent
    before = (parent_dir / "checkpoints" / "last.pt").read_bytes()
    fork = tmp_path / "fork"
    train_in(fork, f"resume={parent_dir}", "iterations=6", "seed=3", unnamed_keys=unnamed())

    [run_dir] = wandb_runs(fork)
    run = inspect(run_dir)
    assert run["run_id"] != parent_run["run_id"]
    assert run["name"] == parent_run["name"].replace("iterations=4", "iterations=6")  # seed=3 was ignored
    lineage = {
        "kind": "fork",
        "run_dir": str(parent_dir.resolve()),
        "checkpoint": str((parent_dir / "checkpoints" / "last.pt").resolve()),
        "wandb_id": parent_run["run_id"],
        "name": parent_run["name"],
        "step": 4,
    }
    assert run["config"]["lineage"] == lineage == results(fork)["wandb"]["lineage"]
    assert records(run_dir, "run")[0]["run_group"] == "sinusoid-5shot"
    assert load_checkpoint(fork / "checkpoints" / "last.pt")["step"] == 6
    assert len(wandb_runs(parent_dir)) == 1  # nothing written into the parent's W&B run
    assert (parent_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_init_from_starts_a_new_run_with_new_settings_from_the_parents_best_weights(tmp_path, parent, monkeypatch):
    parent_dir, parent_run = parent
    monkeypatch.chdir(parent_dir.parent)  # a relative path, as resume takes it
    child = tmp_path / "child"
    train_in(child, f"init_from={parent_dir.name}", "optimizer.lr=0.01", "iterations=0", unnamed_keys=unnamed())

    run = inspect(wandb_runs(child)[0])
    best = load_checkpoint(parent_dir / "checkpoints" / "best.pt")
    assert run["run_id"] != parent_run["run_id"] and run["name"] == "iterations=0,optimizer.lr=0.01"
    assert run["config"]["lineage"] == {
        "kind": "init_from",
        "run_dir": str(parent_dir.resolve()),
        "checkpoint": str((parent_dir / "checkpoints" / "best.pt").resolve()),
        "wandb_id": parent_run["run_id"],
        "name": parent_run["name"],
        "step": best["step"],
    }
    assert run["config"]["optimizer"]["lr"] == 0.01 and run["config"]["shots"] == 10  # its own, not shots=5
    start = load_checkpoint(child / "checkpoints" / "last.pt")  # iterations=0: the weights it started from
    assert start["step"] == 0 and start["wandb"]["lineage"] == results(child)["wandb"]["lineage"]
    for name, tensor in best["learner"].items():
        assert torch.equal(start["learner"][name], tensor), name


def test_init_from_and_a_resume_path_are_refused_together_but_resume_true_continues_a_requeued_job(tmp_path, parent):
    parent_dir, _ = parent
    with pytest.raises(MamlError) as refused:
        find_start(config(f"resume={parent_dir}", f"init_from={parent_dir}"), tmp_path / "job")
    assert str(refused.value) == (
        f"resume={parent_dir} and init_from={parent_dir} cannot be combined: resume continues a run with its "
        "settings, init_from starts a new run from a checkpoint's weights; give one of them"
    )
    requeue = config("resume=true", f"init_from={parent_dir}")  # as the Slurm presets (resume: true) run it
    assert find_start(requeue, tmp_path / "job").kind == "init_from"  # its first start
    assert find_start(requeue, parent_dir).kind == "resumed"  # a job that wrote a checkpoint continues
    empty = rf"^init_from={re.escape(str(tmp_path))}: no checkpoints/best.pt or last.pt in that directory$"
    with pytest.raises(MamlError, match=empty):
        find_start(config(f"init_from={tmp_path}"), tmp_path / "job")


def write_image_folder(root, classes: int) -> None:
    """train/ val/ test/ of ``classes`` classes, two random 28x28 images each."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in range(classes):
            for i in range(2):
                path = root / split / f"class{c:02d}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)


def test_init_from_a_5_way_run_into_a_20_way_run_starts_a_new_head(tmp_path, caplog):
    write_image_folder(tmp_path / "images", classes=20)
    data = [
        "dataset=folder",
        f"dataset.root={tmp_path / 'images'}",
        "dataset.channels=1",
        "queries=1",
        "model.hidden=8",
        "logger=none",
    ]
    train_in(tmp_path / "five", *data, "ways=5", "iterations=2")
    with caplog.at_level(logging.INFO, logger="maml_cli"):
        train_in(tmp_path / "twenty", *data, "ways=20", "iterations=0", f"init_from={tmp_path / 'five'}")

    five = load_checkpoint(tmp_path / "five" / "checkpoints" / "best.pt")["learner"]
    twenty = load_checkpoint(tmp_path / "twenty" / "checkpoints" / "last.pt")["learner"]
    features = [name for name in five if name.startswith("model.features.")]
    assert features and all(torch.equal(twenty[name], five[name]) for name in features)
    assert twenty["model.head.weight"].shape == (20, 8)
    [line] = [m for m in caplog.messages if m.startswith("init_from ")]
    assert f"kept {', '.join(features)};" in line
    assert (
        "initialised afresh: model.head.weight (shape [5, 8] there, [20, 8] here), "
        "model.head.bias (shape [5] there, [20] here), inner_lr.rates.0 (this run's algorithm.lr); not used: nothing"
    ) in line


def test_init_from_a_checkpoint_of_another_model_family_is_refused(parent):
    parent_dir, _ = parent
    path = parent_dir / "checkpoints" / "best.pt"
    conv = config("dataset=omniglot", f"init_from={path}")
    learner = build_learner(conv, SimpleNamespace(task_kind="classification", input_shape=(1, 28, 28)))
    with pytest.raises(MamlError) as refused:
        init_weights(Start("init_from", path, load_checkpoint(path)), learner, conv)
    assert str(refused.value) == (
        f"init_from={path}: none of the weights of {path} fit this model (it holds name=mlp hidden=[40, 40], "
        "this run name=conv4 hidden=64 pooling=stride)"
    )
