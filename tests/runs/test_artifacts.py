"""Checkpoint lineage: every checkpoint write is a version of the run's model artifact, by reference or uploaded."""

import base64
import hashlib
import json
import signal

import pytest
import wandb

from maml_cli.config import CheckpointFiles
from maml_cli.runs.artifacts import log_checkpoint, model_artifact
from maml_cli.runs.checkpoints import load_checkpoint
from maml_cli.training import RunInfo, train, trainer
from maml_cli.training.signals import Interrupted
from tests.training.training_helpers import TINY, config, inspect, records, wandb_runs

# validations (best.pt if better) at steps 2 and 4, last.pt at step 3, and at step 5 when SIGTERM stops it
RUN = [*TINY, "val_every=2", "checkpoint_every=3", "iterations=20", "algorithm.eval_chunk=4"]


def interrupted_run(tmp_path, monkeypatch, at_step: int, *overrides: str):
    """The directory of an offline training run stopped by SIGTERM during meta-step ``at_step``."""
    meta_step = trainer.Trainer._meta_step

    def step_then_signal(self, batch):
        meta_step(self, batch)
        if self.step + 1 == at_step:  # ``step`` counts the meta-steps done before this one
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(trainer.Trainer, "_meta_step", step_then_signal)
    job = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config(*RUN, *overrides), RunInfo(output_dir=job))
    return job


def md5(path) -> str:
    """A file's MD5 as a W&B manifest holds it (base64)."""
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def file_of(version: dict) -> str:
    [content] = version["manifest"]["contents"]
    return content["path"]


def metadata(version: dict) -> dict:
    return json.loads(version["metadata"])


def test_an_interrupted_run_has_logged_every_checkpoint_write_with_moving_best_and_latest(tmp_path, monkeypatch):
    job = interrupted_run(tmp_path, monkeypatch, at_step=5)
    [run_dir] = wandb_runs(job)
    versions = records(run_dir, "artifact")
    assert {(v["name"], v["type"]) for v in versions} == {(f"model-{inspect(run_dir)['run_id']}", "model")}
    last = [v for v in versions if file_of(v) == "last.pt"]
    best = [v for v in versions if file_of(v) == "best.pt"]

    assert [(metadata(v)["kind"], metadata(v)["step"], sorted(v["aliases"])) for v in last] == [
        ("last", 3, ["latest", "step-3"]),
        ("last", 5, ["latest", "step-5"]),  # written on the way out
    ]
    state = load_checkpoint(job / "checkpoints" / "best.pt")
    validated = {v["step"]: v["mean"] for v in state["history"]}
    assert metadata(best[0])["step"] == 2 and metadata(best[-1])["step"] == state["best"]["step"]
    for version in best:  # each a better validation score than the one before
        step = metadata(version)["step"]
        assert {"best", f"step-{step}"} <= set(version["aliases"])
        assert metadata(version)["value"] == validated[step] and metadata(version)["metric"] == "val/mse"
    for name, newest in (("last.pt", last[-1]), ("best.pt", best[-1])):  # the file on disk, referred to
        [content] = newest["manifest"]["contents"]
        assert content["ref"] == (job / "checkpoints" / name).resolve().as_uri()
        assert content["digest"] == md5(job / "checkpoints" / name)


def test_an_uploaded_checkpoint_is_the_same_version_as_a_reference_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where W&B stages uploads offline
    path = tmp_path / "best.pt"
    path.write_bytes(b"weights")
    state = {"step": 7, "best": {"metric": "val/acc", "value": 0.5, "step": 7}, "history": []}

    uploaded = model_artifact("abc123", path, state, CheckpointFiles.upload)
    referred = model_artifact("abc123", path, state, CheckpointFiles.reference)
    assert uploaded.name == referred.name == "model-abc123"
    assert uploaded.manifest.entries["best.pt"].ref is None  # the file itself, copied to the staging folder
    assert referred.manifest.entries["best.pt"].ref == path.as_uri()
    assert uploaded.digest == referred.digest  # so maml-eval's declaration finds the training run's version
    assert uploaded.metadata == {"kind": "best", "step": 7, "metric": "val/acc", "value": 0.5}


def test_nothing_is_read_or_logged_when_tracking_is_off(tmp_path):
    with wandb.init(mode="disabled") as run:
        log_checkpoint(run, tmp_path / "missing.pt", {"step": 1}, CheckpointFiles.upload)  # would fail if read
