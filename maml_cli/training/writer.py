"""What a training job writes: checkpoints and ``results.json`` in its run directory, and its W&B run.

Under torchrun rank 0 writes for the whole job through a :class:`RunWriter`; the other ranks get a
:class:`Silent` one, which writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import wandb

from maml_cli.config import TrainConfig, WandbMode
from maml_cli.runs.checkpoints import atomic_write, remove_temporaries, save_checkpoint
from maml_cli.runs.tracking import open_run, run_identity, task_tag
from maml_cli.training.resume import adopt_best
from maml_cli.training.signals import Interrupted

log = logging.getLogger(__name__)

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

    @property
    def checkpoints(self) -> Path:
        """The job's ``checkpoints/`` folder: ``last.pt`` and ``best.pt``."""
        return self.output_dir / "checkpoints"


class RunWriter:
    """The run directory and W&B run of a training job; ``with`` closes the W&B run.

    Opening it removes the partial files of writes a killed process left, adopts the ``best.pt`` beside
    the ``resumed`` checkpoint file, and opens the W&B run (the ``checkpoint``'s, if resumed, continues).
    Left by an exception, the run is ``failed`` (exit code 1); stopped by a signal (:class:`Interrupted`),
    it is marked preempting (unless it was Ctrl-C) and finished with exit code 128 + the signal number.
    (Unlike ``with wandb.init()``, this prints no traceback of errors meant for the user.)
    """

    def __init__(
        self,
        config: TrainConfig,
        values: dict,
        info: RunInfo,
        resumed: Path | None = None,
        checkpoint: dict | None = None,
    ):
        self.config, self.values, self.info = config, values, info
        for tmp in remove_temporaries(info.output_dir):
            log.info("removed %s, a partial file of a process killed while writing it", tmp)
        if resumed:
            adopt_best(resumed, info.output_dir)
        tags = [values["dataset"]["name"], task_tag(config.ways, config.shots)]
        tags += [info.choices["algorithm"]] if "algorithm" in info.choices else []
        hydra = {"overrides": info.overrides, "choices": info.choices, "output_dir": str(info.output_dir)}
        self.run = open_run(
            "train",
            config.logger,
            name=info.name,
            group=info.sweep or config.name,
            tags=tags,
            output_dir=info.output_dir,
            config={**values, "hydra": hydra},
            origin=checkpoint["wandb"] if checkpoint else None,
            resume=True,
        )
        self.run.define_metric("meta/step")
        for prefix in ("train", "val", "perf"):
            self.run.define_metric(f"{prefix}/*", step_metric="meta/step")
        for metric, summary in SUMMARIES.items():
            self.run.define_metric(metric, step_metric="meta/step", summary=summary)
        self.identity = run_identity(self.run, config.logger)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, kind, error: BaseException | None, traceback) -> None:
        if isinstance(error, Interrupted):
            if error.status == "preempted":
                self.run.mark_preempting()
            self.run.finish(exit_code=error.exit_code)
        elif error is not None:
            self.run.finish(exit_code=1)
        else:
            self.run.finish()

    def log(self, metrics: dict) -> None:
        """Add ``metrics`` (with their ``meta/step``) to the W&B history."""
        self.run.log(metrics)

    def save(self, kind: str, state: Callable[[], dict]) -> None:
        """``checkpoints/{kind}.pt``: the dict ``state()`` (called here only) with the W&B run's identity."""
        save_checkpoint(self.info.checkpoints / f"{kind}.pt", {**state(), "wandb": self.identity})

    def results(self, standing: dict, status: str = "running", test: dict | None = None) -> None:
        """``results.json``: what ``maml-compare`` reads from a run dir, kept current while training.

        ``standing`` is where training stands: its ``metric``, ``step``, ``best`` and ``history`` (validations).
        """
        cfg = self.config
        results = {
            "name": cfg.name,
            "run": self.info.name,
            "wandb": self.identity,
            "dataset": cfg.dataset.name,
            "ways": cfg.ways,
            "shots": cfg.shots,
            "seed": cfg.seed,
            "algorithm": self.info.choices.get("algorithm"),
            "metric": standing["metric"],
            "status": status,
            "step": standing["step"],
            "iterations": cfg.iterations,
            "best": standing["best"],
            "validation": standing["history"],
            "test": test,
            "checkpoints": {"best": "checkpoints/best.pt", "last": "checkpoints/last.pt"},
            "config": self.values,
        }
        atomic_write(self.info.output_dir / "results.json", json.dumps(results, indent=2).encode())

    def finish(self, standing: dict, test: dict | None) -> None:
        """The end: the W&B summary and model artifact, and ``results.json`` with status ``finished``."""
        m, best = standing["metric"], standing["best"]
        self.run.summary["best/step"] = best["step"]
        if test:
            self.run.summary[f"test/{m}"], self.run.summary[f"test/{m}_ci95"] = test["mean"], test["ci95"]
        if self.config.logger.mode is not WandbMode.disabled:
            self._log_checkpoints({"step": standing["step"], "best": best})
        self.results(standing, "finished", test)

    def _log_checkpoints(self, metadata: dict) -> None:
        """The checkpoints as a model artifact, by reference (``file://`` + checksum): nothing is copied."""
        artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metadata)
        for name in ("best.pt", "last.pt"):
            path = self.info.checkpoints / name
            if path.is_file():
                artifact.add_reference(path.resolve().as_uri(), name=name)
        self.run.log_artifact(artifact, aliases=["latest", f"step-{metadata['step']}"])


class Silent(RunWriter):
    """The writer of the ranks other than 0 under torchrun: rank 0 writes for the job, these write nothing."""

    def __init__(self, *_) -> None:
        pass

    def __exit__(self, *_) -> None:
        pass

    def log(self, metrics: dict) -> None:
        pass

    def save(self, kind: str, state: Callable[[], dict]) -> None:
        pass

    def results(self, standing: dict, status: str = "running", test: dict | None = None) -> None:
        pass

    def finish(self, standing: dict, test: dict | None) -> None:
        pass
