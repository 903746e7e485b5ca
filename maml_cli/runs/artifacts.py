"""Checkpoints as W&B model artifacts: each write is a version, and the jobs that read one declare it as input.

A training run's artifact is ``model-<its run id>``, type ``model``. Each write of ``best.pt`` or ``last.pt``
is a version holding that one file, with metadata ``kind`` (best, last), ``step``, ``metric`` and ``value``
(that step's validation score, if it was validated), and the aliases ``step-N`` and ``best`` or ``latest``
(W&B moves ``latest`` to every new version, ``best`` only to the writes of best.pt). The file is a
``file://`` reference with its checksum (nothing is copied), or with ``logger.checkpoints=upload`` the file
itself, uploaded on sync so that another machine can download it.

``maml-eval`` and ``maml-adapt`` declare the checkpoint they read as a version of the same artifact: a
version's digest is its file names and contents, so the checkpoint file read is the very version its
training run logged, and the lineage graph reads train run → model → eval run.
"""

from __future__ import annotations

from pathlib import Path

import wandb

from maml_cli.config import CheckpointFiles


def model_artifact(run_id: str, path: Path, state: dict, files: CheckpointFiles) -> wandb.Artifact:
    """The checkpoint ``state`` written at ``path``, as a version of training run ``run_id``'s model artifact."""
    step, best = state["step"], state["best"]
    kind = path.stem
    validated = {v["step"]: v["mean"] for v in state["history"]}
    metadata = {
        "kind": kind,
        "step": step,
        "metric": best["metric"],
        "value": best["value"] if kind == "best" else validated.get(step),
    }
    artifact = wandb.Artifact(f"model-{run_id}", type="model", metadata=metadata)
    if files is CheckpointFiles.upload:
        artifact.add_file(str(path), name=path.name)  # offline: copied to W&B's staging folder until synced
    else:
        artifact.add_reference(path.resolve().as_uri(), name=path.name)
    return artifact


def log_checkpoint(run, path: Path, state: dict, files: CheckpointFiles) -> None:
    """Log the checkpoint just written at ``path`` as a new version of ``run``'s model artifact.

    Only at checkpoint writes, never in a meta-step: it reads the file once for its checksum (or copy).
    Nothing happens when tracking is off.
    """
    if run.disabled:
        return
    kind = "best" if path.stem == "best" else "latest"
    run.log_artifact(model_artifact(run.id, path, state, files), aliases=[kind, f"step-{state['step']}"])


def use_checkpoint(run, path: Path, state: dict) -> None:
    """Declare the checkpoint at ``path`` (holding ``state``) an input of ``run``.

    It is declared as a version of its training run's model artifact, found by digest. A checkpoint of
    an untracked training run has no artifact, and when ``run`` is not tracked nothing is declared.
    """
    train_run = state["wandb"]["id"]
    if run.disabled or train_run is None:
        return
    artifact = model_artifact(train_run, path, state, CheckpointFiles.reference)
    if not run.offline:
        run.use_artifact(artifact)
        return
    # Offline, ``run.use_artifact`` raises TypeError. Online, given this draft artifact, it logs it with
    # ``use_after_commit`` through ``_log_artifact``, the call made here. The record goes into the run's .wandb
    # file. On ``wandb sync``, wandb-core's ArtifactSaver creates the artifact. With the same name and digest
    # it is the version the training run logged, and the saver marks it used by this run. As online, W&B adds
    # the alias ``latest`` to what it logs, so a version used last is ``latest`` after sync.
    run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
