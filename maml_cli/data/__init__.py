"""Few-shot datasets: ``build_dataset(cfg)`` gives a ``FewShotDataset`` that draws ``TaskBatch``es.

``DATASETS`` is the one registry of datasets: each name's class, which declares its settings
(``config``, also Hydra's schema for ``conf/dataset/<name>.yaml``) and is built from them.
"""

from __future__ import annotations

from dataclasses import is_dataclass

from omegaconf import DictConfig, OmegaConf

from maml_cli.data.config import DatasetConfig
from maml_cli.data.dataset import FewShotDataset
from maml_cli.data.folder import FolderConfig, ImageFolder
from maml_cli.data.images import load_class_folders, load_image
from maml_cli.data.miniimagenet import MiniImageNet, MiniImageNetConfig
from maml_cli.data.omniglot import Omniglot, OmniglotConfig
from maml_cli.data.sampler import TaskSampler
from maml_cli.data.sinusoid import Sinusoid, SinusoidConfig
from maml_cli.errors import MamlError

DATASETS: dict[str, type[FewShotDataset]] = {d.name: d for d in (Omniglot, Sinusoid, MiniImageNet, ImageFolder)}


def build_dataset(cfg: DatasetConfig | DictConfig) -> FewShotDataset:
    """The dataset ``cfg.name`` configured by ``cfg``: its ``config`` dataclass, or a DictConfig like one."""
    if cfg.name not in DATASETS:
        raise MamlError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[cfg.name]
    if isinstance(cfg, DictConfig):
        values = OmegaConf.to_object(cfg)
        cfg = values if is_dataclass(values) else dataset.config(**values)
    return dataset(cfg)


__all__ = [
    "DATASETS",
    "DatasetConfig",
    "FewShotDataset",
    "FolderConfig",
    "ImageFolder",
    "MiniImageNet",
    "MiniImageNetConfig",
    "Omniglot",
    "OmniglotConfig",
    "Sinusoid",
    "SinusoidConfig",
    "TaskSampler",
    "build_dataset",
    "load_class_folders",
    "load_image",
]
