"""The settings of a run, as typed dataclasses usable without Hydra (Hydra uses them as schemas).

These dataclasses hold every default; the YAML files of ``conf/`` hold only what a choice changes.
The core's, the datasets' (``maml_cli.data.DATASETS``) and the models' (``maml_cli.models.MODELS``) own
dataclasses are the nodes of their groups, so each setting is defined once. Ranges and cross-field
rules run in ``__post_init__``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any

from omegaconf import II, MISSING

from maml_cli.core.config import BatchNormPolicy, InnerLoopConfig, OptimizerConfig, ScheduleSpan, check_range
from maml_cli.errors import MamlError

TASK_SHAPE = ("ways", "shots", "queries")
SEED_MAX = 2**32 - 1  # NumPy's and torch's seeds: 0 .. 2**32 - 1


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


class CheckpointFiles(str, Enum):
    """How the model artifacts hold the checkpoint files."""

    reference = "reference"  # a file:// reference and its checksum: nothing is copied
    upload = "upload"  # the file itself, uploaded on sync: another machine can download it


@dataclass
class LoggerConfig:
    """Weights & Biases: offline unless ``WANDB_MODE`` (or ``logger.mode``) says otherwise."""

    mode: WandbMode = II("oc.env:WANDB_MODE,offline")
    project: str = "maml-cli"
    entity: str | None = None
    group: str | None = None  # default: the sweep (multirun) or the experiment name
    tags: list[str] = field(default_factory=list)
    checkpoints: CheckpointFiles = CheckpointFiles.reference  # each checkpoint write: a model artifact version


@dataclass
class PathsConfig:
    """Where data, caches and outputs live (the ``paths`` group). Relative paths, here and in every other
    setting that names a file or folder, are relative to the directory the command started in."""

    data_root: str | None = II("oc.env:MAML_DATA_ROOT,null")  # datasets in <data_root>/<name> (see maml_cli.data)
    cache_dir: str | None = II("oc.env:MAML_CACHE_DIR,null")  # processed datasets (None: ~/.cache/maml_cli)
    output_root: str = "outputs"  # run dirs: <output_root>/<command>/<time>_<token>/


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
    name: str | None = None  # experiment name: the W&B group of single runs (default: dataset-task, omniglot-5w1s)
    log_every: int = 50  # meta-steps between progress lines / W&B training metrics
    val_every: int = 500  # meta-steps between validations (and at the end); best.pt by validation
    val_tasks: int = 200  # fixed validation episodes (mean ± 95% CI)
    test_tasks: int = 600  # fixed test episodes for the best checkpoint at the end (0: none)
    checkpoint_every: int = 500  # meta-steps between writes of checkpoints/last.pt (and at the end)
    resume: str | None = None  # true: this job's checkpoints/last.pt if any; or a checkpoint / run dir (a fork)
    init_from: str | None = None  # a checkpoint / run dir (its best.pt): a new run from the weights that fit
    dist_timeout_s: float = 600.0  # under torchrun: seconds a process waits for the others before failing
    max_time: str | None = None  # wall-clock budget of training + validation (30m, 1h30m, 00:30:00, seconds)
    overfit: bool = False  # train on one fixed meta-batch, again and again (debug=overfit)
    dataset: Any = MISSING  # dataset=NAME: a config of maml_cli.data.DATASETS
    model: Any = MISSING  # model=NAME: a config of maml_cli.models.MODELS (each dataset chooses one)
    algorithm: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        check_task_shape(self)
        check_range("seed", self.seed, minimum=0, maximum=SEED_MAX)
        check_range("meta_batch_size", self.meta_batch_size, minimum=1)
        check_range("iterations", self.iterations, minimum=0)
        for key in ("log_every", "val_every", "checkpoint_every"):
            check_range(key, getattr(self, key), minimum=1)
        check_range("val_tasks", self.val_tasks, minimum=2)  # a confidence interval needs two tasks
        if self.test_tasks:
            check_range("test_tasks", self.test_tasks, minimum=2)
        check_device(self.device)
        check_range("dist_timeout_s", self.dist_timeout_s, minimum=1.0)
        if self.max_time is not None:
            duration_s("max_time", self.max_time)
        elif self.optimizer.span is ScheduleSpan.max_time:
            raise MamlError(
                "optimizer.span=max_time anneals the meta-lr over the max_time budget, and max_time is not set: "
                "set max_time (e.g. max_time=30m) or optimizer.span=iterations"
            )


def check_task_shape(cfg) -> None:
    """ways ≥ 2, shots ≥ 1, queries ≥ 1, and the dataset group agrees with the top-level keys."""
    check_range("ways", cfg.ways, minimum=2)
    check_range("shots", cfg.shots, minimum=1)
    check_range("queries", cfg.queries, minimum=1)
    for key in TASK_SHAPE:
        seen = getattr(cfg.dataset, key)
        if seen != getattr(cfg, key):
            raise MamlError(f"dataset.{key}={seen} contradicts {key}={getattr(cfg, key)}: set {key}={seen} instead")


def duration_s(key: str, value: str) -> float:
    """Seconds in ``value``: plain seconds (90), units (90s, 30m, 1h30m, 1.5h) or H:MM:SS; else MamlError."""
    text = str(value).strip().lower()
    number = r"(\d+(?:\.\d+)?)"
    if re.fullmatch(number, text):
        return float(text)
    if clock := re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d)", text):
        hours, minutes, seconds = (int(part) for part in clock.groups())
    elif text and (units := re.fullmatch(f"(?:{number}h)?(?:{number}m)?(?:{number}s)?", text)):
        hours, minutes, seconds = (float(part or 0) for part in units.groups())
    else:
        raise MamlError(
            f"{key}={value!r} is not a duration; use seconds (90), units (90s, 30m, 1h30m) or H:MM:SS (00:30:00)"
        )
    return float(3600 * hours + 60 * minutes + seconds)


def check_device(device: str) -> None:
    if device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        raise MamlError(f"device={device!r} is not valid; use auto, cpu, cuda, cuda:N or mps")


def with_task_shape(config: type) -> type:
    """The dataset's schema: its config plus the interpolated top-level ``ways``/``shots``/``queries``."""
    return make_dataclass(config.__name__.replace("Config", "Schema"), [], bases=(config, TaskShape))


# ---------------------------------------------------------------- evaluation and deployment


@dataclass
class CheckpointSource:
    """A trained model: a ``checkpoint`` file, or a training ``run`` directory (its ``best.pt``)."""

    checkpoint: str | None = None
    run: str | None = None
    steps: int | None = None  # inner steps (default: the checkpoint's algorithm.eval_steps)
    lr: float | None = None  # inner learning rate, one scalar (default: the checkpoint's, learned or not)
    device: str = "auto"

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.run is None):
            raise MamlError("give exactly one of checkpoint=PATH (a .pt file) or run=DIR (a training run directory)")
        if self.steps is not None:
            check_range("steps", self.steps, minimum=0)
        if self.lr is not None:
            check_range("lr", self.lr, minimum=0.0, exclusive=True)
        check_device(self.device)


@dataclass
class EvalConfig(CheckpointSource):
    """``maml-eval``: adaptation curves on fixed episodes; task settings left unset keep the checkpoint's."""

    split: str = "test"
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    tasks: int = 600  # fixed episodes: the same in every run for the same seed and task shape
    seed: int = 0  # which fixed episodes
    batchnorm: BatchNormPolicy | None = None  # transductive | per_step (default: the checkpoint's)
    eval_chunk: int | None = None  # tasks adapted together (default: the checkpoint's algorithm.eval_chunk)
    data_root: str | None = None  # where the dataset is (default: the checkpoint's dataset.root)
    plot_tasks: int = 3  # sinusoid: tasks drawn in fits.png
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("ways", "shots", "queries", "eval_chunk"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), minimum=2 if key == "ways" else 1)
        check_range("tasks", self.tasks, minimum=2)  # a confidence interval needs two tasks
        check_range("seed", self.seed, minimum=0, maximum=SEED_MAX)
        check_range("plot_tasks", self.plot_tasks, minimum=0)


@dataclass
class AdaptConfig(CheckpointSource):
    """``maml-adapt``: adapt on labelled ``support`` folders, predict the images in ``query``."""

    support: str = MISSING  # one sub-folder of images per class
    query: str = MISSING  # the images to classify
    output: str | None = None  # CSV path (default: predictions.csv in the run directory)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
