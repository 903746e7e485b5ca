"""A trained model back from its checkpoint: the checkpoint's own config, its fingerprint and its learner."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from maml_cli.config import CheckpointSource, TrainConfig
from maml_cli.core import MetaLearner
from maml_cli.data import DATASETS
from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import load_checkpoint
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
