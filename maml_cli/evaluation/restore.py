"""A trained model back from its checkpoint: the checkpoint's own config, its fingerprint and its learner, and the
W&B run of a job that uses it, lined up with its training run."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from maml_cli.config import CheckpointSource, LoggerConfig, TrainConfig
from maml_cli.core import MetaLearner
from maml_cli.data import DATASETS
from maml_cli.errors import MamlError
from maml_cli.runs.artifacts import use_checkpoint
from maml_cli.runs.checkpoints import load_checkpoint
from maml_cli.runs.tracking import open_run
from maml_cli.runtime import build_learner, train_config_from_dict


@dataclass
class Trained:
    """A loaded checkpoint (``state``) and the training config rebuilt from it."""

    path: Path
    sha256: str
    state: dict
    config: TrainConfig

    @property
    def task_kind(self) -> str:
        """``classification`` or ``regression``, known without loading the data."""
        return DATASETS[self.config.dataset.name].task_kind

    def describe(self) -> str:
        """What was trained, e.g. ``model conv4 hidden=64 pooling=stride for 5-way omniglot``."""
        model = self.state["config"]["model"]
        settings = " ".join(f"{k}={v}" for k, v in model.items() if k != "name")
        data = self.config.dataset.name
        task = f"{data} {self.task_kind}" if self.task_kind == "regression" else f"{self.config.ways}-way {data}"
        return f"model {model['name']} {settings} for {task}"

    @property
    def job(self) -> dict:
        """The training job's W&B run ``name`` and Hydra group ``choices`` (a checkpoint written before they were
        kept: its run directory's name, no choices)."""
        return self.state.get("job") or {"name": self.path.resolve().parent.parent.name, "choices": {}}

    @property
    def source(self) -> dict:
        """Which checkpoint: its ``path``, ``sha256``, ``step`` and training run (``train_run``, its W&B identity)."""
        return {
            "path": str(self.path.resolve()),
            "sha256": self.sha256,
            "step": self.state["step"],
            "train_run": self.state["wandb"],
        }

    def open_run(
        self, job_type: str, logger: LoggerConfig, output_dir: Path, task: str, settings: dict, detail: str = ""
    ):
        """The W&B run of a ``job_type`` job (eval, adapt) on ``task`` tasks (e.g. ``5w1s``) that uses this model.

        It lines up with the training run: in its project and group, its config keyed as the training
        run's (``ways``, ``shots``, ``algorithm``, ``dataset``, ``hydra.choices``, ... of the model), this job's
        ``settings`` under ``job_type``, and the checkpoint declared as its input, a version of the training
        run's model artifact. Its name, ``<job_type> <task> <detail> | <model>``, says which model: the training
        run's name, seed, checkpoint file and step.
        """
        origin, values = self.state["wandb"], self.state["config"]
        algorithm = self.job["choices"].get("algorithm")
        model = f"{self.job['name']} seed={values['seed']} {self.path.stem}@{self.state['step']}"
        run = open_run(
            job_type,
            logger,
            name=f"{job_type} {task} {detail}".rstrip() + f" | {model}",
            group=origin.get("group") or values["name"],
            tags=[job_type, values["dataset"]["name"], task, *([algorithm] if algorithm else [])],
            output_dir=output_dir,
            config={
                **values,
                "hydra": {"choices": self.job["choices"]},
                job_type: settings,
                "checkpoint": self.source,
                "train_run_id": origin.get("id"),
            },
            origin=origin,
        )
        try:
            use_checkpoint(run, self.path, self.state)
        except BaseException:
            run.finish(exit_code=1)  # never left open for the next job of a sweep
            raise
        return run

    def check_ways(self, ways: int, source: str) -> None:
        """The head has ``config.ways`` outputs: it can label up to that many classes."""
        if ways > self.config.ways:
            raise MamlError(
                f"{source} has {ways} classes, but checkpoint {self.path} was trained with "
                f"{self.describe()}: its head tells at most {self.config.ways} classes apart"
            )


def checkpoint_path(source: CheckpointSource) -> Path:
    """``checkpoint=`` as given, or the ``best.pt`` of the training ``run=`` directory."""
    if source.checkpoint is not None:
        return Path(source.checkpoint).expanduser()
    run = Path(source.run).expanduser()
    if not run.is_dir():
        raise MamlError(f"run={source.run}: no such training run directory")
    return run / "checkpoints" / "best.pt"


def load_trained(source: CheckpointSource, data_root: str | None = None) -> Trained:
    """The checkpoint of ``source`` and its config (with ``data_root`` replacing ``dataset.root``)."""
    path = checkpoint_path(source)
    state = load_checkpoint(path)
    values = copy.deepcopy(state["config"])
    if data_root is not None:
        values["dataset"]["root"] = data_root
    try:
        config = train_config_from_dict(values)
    except MamlError:
        raise
    except Exception as error:  # omegaconf's validation errors: a config of another maml-cli version
        raise MamlError(
            f"checkpoint {path} holds a config this maml-cli cannot read: {str(error).splitlines()[0]}"
        ) from None
    return Trained(path, _sha256(path), state, config)


def restore_learner(trained: Trained, data, device: torch.device) -> MetaLearner:
    """The trained learner for ``data`` (anything with ``task_kind`` and ``input_shape``), on ``device``."""
    learner = build_learner(trained.config, data)
    try:
        learner.load_state_dict(trained.state["learner"])
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        raise MamlError(
            f"checkpoint {trained.path} was trained with {trained.describe()}, but its weights do not fit "
            f"that model ({detail}); was it written by another model or maml-cli version?"
        ) from None
    return learner.to(device)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
