"""The settings of a run, as typed dataclasses usable without Hydra (Hydra uses them as schemas).

The core's and the data layer's own dataclasses are the nodes of their groups, so each setting is
defined once. Ranges and cross-field rules run in ``__post_init__``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING, II

from maml_cli.core.config import InnerLoopConfig, OptimizerConfig, check_range
from maml_cli.data.config import FolderConfig, MiniImageNetConfig, OmniglotConfig, SinusoidConfig
from maml_cli.errors import MamlError
from maml_cli.models.config import Conv4Config, MLPConfig

TASK_SHAPE = ("ways", "shots", "queries")


@dataclass
class TaskShape:
    """The dataset group reads the top-level shorthand keys; they are the single source of truth."""

    ways: int = II("ways")
    shots: int = II("shots")
    queries: int = II("queries")


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    """Weights & Biases: offline unless ``WANDB_MODE`` (or ``logger.mode``) says otherwise."""

    mode: WandbMode = II("oc.env:WANDB_MODE,offline")
    project: str = "maml-cli"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the sweep (multirun) or the experiment name
    tags: List[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """``maml-train``: the top-level keys users type, and one node per config group."""

    ways: int = 5
    shots: int = 1
    queries: int = 15  # query examples per class
    meta_batch_size: int = 32
    iterations: int = 1000
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    name: str = "default"  # experiment name: the W&B group of single runs
    dataset: Any = MISSING
    model: Any = MISSING
    algorithm: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self) -> None:
        check_task_shape(self)
        check_range("meta_batch_size", self.meta_batch_size, minimum=1)
        check_range("iterations", self.iterations, minimum=0)
        check_device(self.device)


def check_task_shape(cfg) -> None:
    """ways ≥ 2, shots ≥ 1, queries ≥ 1, and the dataset group agrees with the top-level keys."""
    check_range("ways", cfg.ways, minimum=2)
    check_range("shots", cfg.shots, minimum=1)
    check_range("queries", cfg.queries, minimum=1)
    for key in TASK_SHAPE:
        seen = getattr(cfg.dataset, key)
        if seen != getattr(cfg, key):
            raise MamlError(f"dataset.{key}={seen} contradicts {key}={getattr(cfg, key)}: set {key}={seen} instead")


def check_device(device: str) -> None:
    if device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        raise MamlError(f"device={device!r} is not valid; use auto, cpu, cuda, cuda:N or mps")


def with_task_shape(config: type) -> type:
    """The dataset's schema: its config plus the interpolated top-level ``ways``/``shots``/``queries``."""
    return make_dataclass(config.__name__.replace("Config", "Schema"), [], bases=(config, TaskShape))


DATASETS = {
    "omniglot": OmniglotConfig,
    "sinusoid": SinusoidConfig,
    "miniimagenet": MiniImageNetConfig,
    "folder": FolderConfig,
}
MODELS = {"conv4": Conv4Config, "mlp": MLPConfig}
