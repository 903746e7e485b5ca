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

from maml_cli.config import TrainConfig
from maml_cli.runs.artifacts import log_checkpoint
from maml_cli.runs.checkpoints import atomic_write, remove_temporaries, save_checkpoint
from maml_cli.runs.tracking import open_run, run_identity, training_task_tag
from maml_cli.training.resume import Start, adopt_best
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
    """Where and as what a training job runs: filled from Hydra by the CLI, then settled by
    ``resume.identify`` from how the job starts (a resumed run keeps its name, group, overrides, ...)."""

    output_dir: Path
    name: str = "defaults"  # W&B run name: what varies within the group (the overrides less the unnamed keys)
    sweep: str | None = None  # the W&B group of the multirun this job belongs to
    overrides: list[str] = field(default_factory=list)  # the command-line overrides (settled: the run's)
    choices: dict[str, str] = field(default_factory=dict)  # config-group choices (e.g. algorithm: maml)
    unnamed: list[str] = field(default_factory=list)  # keys (and their sub-keys) whose overrides name no run
    group: str | None = None  # W&B group (settled)
    lineage: dict | None = None  # the parent of a fork or an init_from run (see ``resume.Start.lineage``)
    starts: list[dict] = field(default_factory=list)  # what each start of the run was given: overrides, step

    @property
    def identity(self) -> dict:
        """What a checkpoint keeps of the run besides its W&B run: name, group, overrides, lineage, starts."""
        keys = ("name", "group", "overrides", "lineage", "starts")
        return {key: getattr(self, key) for key in keys}

    @property
    def checkpoints(self) -> Path:
        """The job's ``checkpoints/`` folder: ``last.pt`` and ``best.pt``."""
        return self.output_dir / "checkpoints"


class RunWriter:
    """The run directory and W&B run of a training job; ``with`` closes the W&B run.

    Opening it removes the partial files of writes a killed process left, adopts the ``best.pt`` beside the
    checkpoint that a fork ``start``s from, and opens the W&B run: the checkpoint's, when resumed in place.
    Left by an exception, the run is ``failed`` (exit code 1); stopped by a signal (:class:`Interrupted`),
    it is marked preempting (unless it was Ctrl-C) and finished with exit code 128 + the signal number.
    (Unlike ``with wandb.init()``, this prints no traceback of errors meant for the user.)
    """

    def __init__(
        self,
        config: TrainConfig,
        values: dict,
        info: RunInfo,
        start: Start | None = None,
    ):
        self.config, self.values, self.info = config, values, info
        start = start or Start()
        for tmp in remove_temporaries(info.output_dir):
            log.info("removed %s, a partial file of a process killed while writing it", tmp)
        if start.kind == "fork":
            adopt_best(start.path, info.output_dir)
        tags = [values["dataset"]["name"], training_task_tag(config)]
        tags += [info.choices["algorithm"]] if "algorithm" in info.choices else []
        hydra = {"overrides": info.overrides, "choices": info.choices, "output_dir": str(info.output_dir)}
        resumed = start.kind == "resumed"
        self.run = open_run(
            "train",
            config.logger,
            name=info.name,
            group=info.group,
            tags=tags,
            output_dir=info.output_dir,
            config={**values, "hydra": hydra, "lineage": info.lineage, "starts": info.starts},
            origin=start.state["wandb"] if resumed else None,
            resume=resumed,
        )
        self.run.define_metric("meta/step")
        for prefix in ("train", "val", "perf"):
            self.run.define_metric(f"{prefix}/*", step_metric="meta/step")
        for metric, summary in SUMMARIES.items():
            self.run.define_metric(metric, step_metric="meta/step", summary=summary)
        self.identity = {**run_identity(self.run, config.logger), **info.identity}

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
        """``checkpoints/{kind}.pt``: the dict ``state()`` (called here only) with the W&B run's identity and
        the job's run name and group choices; logged as a version of the run's model artifact."""
        path = self.info.checkpoints / f"{kind}.pt"
        checkpoint = {**state(), "wandb": self.identity, "job": {"name": self.info.name, "choices": self.info.choices}}
        save_checkpoint(path, checkpoint)
        log_checkpoint(self.run, path, checkpoint, self.config.logger.checkpoints)

    def results(self, standing: dict, status: str = "running", test: dict | None = None) -> None:
        """``results.json``: what ``maml-compare`` reads from a run dir, kept current while training.

        ``standing`` is where training stands: its ``metric``, ``step``, ``best``, ``history`` (validations),
        ``elapsed_s`` and ``stopped_by``.
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
            "stopped_by": standing["stopped_by"],  # at the end: iterations or max_time
            "elapsed_s": standing["elapsed_s"],  # of training and validation, over resumes
            "best": standing["best"],
            "validation": standing["history"],
            "test": test,
            "checkpoints": {"best": "checkpoints/best.pt", "last": "checkpoints/last.pt"},
            "config": self.values,
        }
        atomic_write(self.info.output_dir / "results.json", json.dumps(results, indent=2).encode())

    def finish(self, standing: dict, test: dict | None) -> None:
        """The end: the W&B summary, and ``results.json`` with status ``finished``."""
        m, best = standing["metric"], standing["best"]
        self.run.summary["best/step"] = best["step"]
        self.run.summary["stopped_by"], self.run.summary["elapsed_s"] = standing["stopped_by"], standing["elapsed_s"]
        if test:
            self.run.summary[f"test/{m}"], self.run.summary[f"test/{m}_ci95"] = test["mean"], test["ci95"]
            self.run.summary["test/seconds"] = test["seconds"]
        self.results(standing, "finished", test)


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
