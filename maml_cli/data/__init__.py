"""Few-shot datasets: ``build_dataset(cfg)`` gives a ``FewShotDataset`` that draws ``TaskBatch``es."""
from __future__ import annotations

from typing import Any

from maml_cli.data.dataset import FewShotDataset
from maml_cli.data.folder import ImageFolder
from maml_cli.data.images import load_class_folders, load_image
from maml_cli.data.miniimagenet import MiniImageNet
from maml_cli.data.omniglot import Omniglot
from maml_cli.data.sampler import TaskSampler
from maml_cli.data.sinusoid import Sinusoid
from maml_cli.data.tasks import TaskBatch
from maml_cli.errors import MamlError

DATASETS: dict[str, type[FewShotDataset]] = {d.name: d for d in (Omniglot, Sinusoid, MiniImageNet, ImageFolder)}


def build_dataset(cfg: Any) -> FewShotDataset:
    """The dataset ``cfg.name`` configured by ``cfg`` (a dataclass of ``config`` or a DictConfig like one)."""
    if cfg.name not in DATASETS:
        raise MamlError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[cfg.name](cfg)


__all__ = ["DATASETS", "FewShotDataset", "ImageFolder", "MiniImageNet", "Omniglot", "Sinusoid", "TaskBatch",
           "TaskSampler", "build_dataset", "load_class_folders", "load_image"]
