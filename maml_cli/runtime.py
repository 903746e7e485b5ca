"""What training, evaluation and deployment share: device, seeding, and building a run's objects."""

from __future__ import annotations

import random

import numpy as np
import torch
from omegaconf import OmegaConf

from maml_cli.config import TrainConfig, with_task_shape
from maml_cli.core import BatchNormPolicy, MetaLearner, TaskBatch
from maml_cli.data import DATASETS
from maml_cli.errors import MamlError
from maml_cli.models import MODELS, build_model


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; anything else must be available here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MamlError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the task samplers carry generators of their own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_learner(config: TrainConfig, dataset) -> MetaLearner:
    """The model of ``config.model`` for ``dataset``, wrapped for meta-learning by ``config.algorithm``."""
    classification = dataset.task_kind == "classification"
    model = build_model(
        config.model,
        dataset.input_shape,
        out_features=config.ways if classification else 1,
        track_running_stats=config.algorithm.batchnorm is BatchNormPolicy.per_step,
    )
    return MetaLearner(model, "cross_entropy" if classification else "mse", config.algorithm)


def train_sampler(config: TrainConfig, dataset, device: torch.device):
    """The training meta-batches: random ones, or with ``config.overfit`` the first one again and again."""
    sampler = dataset.sampler("train", config.ways, config.shots, config.queries, seed=config.seed, device=device)
    return RepeatedBatch(sampler.sample(config.meta_batch_size)) if config.overfit else sampler


class RepeatedBatch:
    """A task sampler that gives the same meta-batch every time, so it has no random state to save."""

    def __init__(self, batch: TaskBatch):
        self.batch = batch

    def sample(self, tasks: int) -> TaskBatch:
        return self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def train_config_from_dict(values: dict) -> TrainConfig:
    """A validated ``TrainConfig`` from a resolved config dict (as saved in checkpoints)."""
    try:
        dataset, model = DATASETS[values["dataset"]["name"]], MODELS[values["model"]["name"]]
    except KeyError as error:
        raise MamlError(f"the saved config names an unknown dataset or model: {error}") from None
    schema = OmegaConf.structured(TrainConfig)
    schema.dataset = OmegaConf.structured(with_task_shape(dataset.config))
    schema.model = OmegaConf.structured(model.config)
    return OmegaConf.to_object(OmegaConf.merge(schema, values))
