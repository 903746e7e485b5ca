"""Weights & Biases: one run per job, inside the job's directory, grouped by sweep or experiment."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import wandb

from maml_cli.training.signals import Interrupted

# metric -> summary kept by W&B (best and last, so a sweep table can show either)
SUMMARIES = {
    "val/acc": "max,last",
    "val/mse": "min,last",
    "train/loss": "min,last",
    "train/query_acc": "max,last",
}


@dataclass
class RunInfo:
    """Where and as what a training job runs (filled from Hydra by the CLI)."""

    output_dir: Path
    name: str = "defaults"  # W&B run name: what varies within the group (Hydra's override_dirname)
    sweep: str | None = None  # the multirun this job belongs to (its W&B group)
    overrides: list[str] = field(default_factory=list)  # command-line overrides of the job
    choices: dict[str, str] = field(default_factory=dict)  # config-group choices (e.g. algorithm: maml)


@contextmanager
def tracked_run(values: dict, info: RunInfo, resumed: dict | None = None) -> Iterator:
    """The W&B run of this job, finished on exit: ``failed`` (exit code 1) if the job raised.

    Stopped by a signal (:class:`Interrupted`), it is marked preempting (unless it was Ctrl-C) and
    finished with exit code 128 + the signal number (state ``failed``, not ``running``).

    ``values`` is the resolved config; ``resumed`` the ``wandb`` entry of a checkpoint, whose run
    continues. Mode ``disabled`` gives a no-op run that writes nothing. (Unlike ``with wandb.init()``,
    this does not print the traceback of errors meant for the user.)
    """
    logger, resumed = values["logger"], resumed or {}
    tags = [values["dataset"]["name"], f"{values['ways']}w{values['shots']}s"]
    tags += [info.choices["algorithm"]] if "algorithm" in info.choices else []
    run = wandb.init(
        project=resumed.get("project") or logger["project"],
        entity=logger["entity"],
        mode=logger["mode"],
        group=resumed.get("group") or logger["group"] or info.sweep or values["name"],
        job_type="train",
        name=info.name,
        tags=tags + list(logger["tags"]),
        dir=str(info.output_dir),
        config={**values, "hydra": {"overrides": info.overrides, "choices": info.choices,
                                    "output_dir": str(info.output_dir)}},
        id=resumed.get("id"),
        resume="allow" if resumed.get("id") else None,
    )
    run.define_metric("meta/step")
    for prefix in ("train", "val", "perf"):
        run.define_metric(f"{prefix}/*", step_metric="meta/step")
    for metric, summary in SUMMARIES.items():
        run.define_metric(metric, step_metric="meta/step", summary=summary)
    try:
        yield run
    except Interrupted as stop:
        if stop.status == "preempted":
            run.mark_preempting()
        run.finish(exit_code=stop.exit_code)
        raise
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()


def run_identity(run, values: dict) -> dict:
    """What a checkpoint keeps to continue ``run`` (id None when tracking is off)."""
    tracked = values["logger"]["mode"] != "disabled"
    return {"id": run.id if tracked else None, "project": run.project if tracked else None,
            "group": run.group if tracked else None, "dir": str(run.dir) if tracked else None}


def log_checkpoints(run, values: dict, paths: dict[str, Path], metadata: dict) -> None:
    """Log the checkpoints as a model artifact by reference (``file://`` + checksum): nothing is copied."""
    if values["logger"]["mode"] == "disabled":
        return
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    for name, path in paths.items():
        if path.is_file():
            artifact.add_reference(path.resolve().as_uri(), name=name)
    run.log_artifact(artifact, aliases=["latest", f"step-{metadata['step']}"])
