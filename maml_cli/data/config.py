"""Typed dataset settings, used from Python and as Hydra's schema for ``conf/dataset/*.yaml``.

``ways``, ``shots`` and ``queries`` live at the top level of a run's config; the dataset group
reads them by interpolation and keeps no copy of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional


def choice(value: Any) -> str:
    """A choice's string value, whether given as one of the Enums below or as plain text (from YAML)."""
    return value.value if isinstance(value, Enum) else str(value)


class OmniglotSplit(str, Enum):
    maml = "maml"  # 1100/100/423 characters, seeded shuffle as in the original MAML code
    lake = "lake"  # background alphabets (train, minus a seeded validation slice) / evaluation alphabets


class Resample(str, Enum):
    lanczos = "lanczos"
    bilinear = "bilinear"
    bicubic = "bicubic"
    nearest = "nearest"
    box = "box"


@dataclass
class DatasetConfig:
    """Fields every dataset has."""

    name: str = "???"
    root: Optional[str] = None  # None: $MAML_DATA_ROOT, then ~/.maml_cli/data, then ./data
    cache_dir: Optional[str] = None  # None: $MAML_CACHE_DIR, else ~/.cache/maml_cli


@dataclass
class OmniglotConfig(DatasetConfig):
    name: str = "omniglot"
    split: OmniglotSplit = OmniglotSplit.maml
    split_seed: int = 1
    image_size: int = 28
    resample: Resample = Resample.lanczos
    invert: bool = True  # strokes become 1 on a 0 background, as in the MAML code
    augment_splits: List[str] = field(default_factory=lambda: ["train"])  # rotations 0/90/180/270 as new classes
    download: bool = True


@dataclass
class SinusoidConfig(DatasetConfig):
    name: str = "sinusoid"
    amplitude: List[float] = field(default_factory=lambda: [0.1, 5.0])
    phase: List[float] = field(default_factory=lambda: [0.0, math.pi])
    x_range: List[float] = field(default_factory=lambda: [-5.0, 5.0])


@dataclass
class MiniImageNetConfig(DatasetConfig):
    name: str = "miniimagenet"
    image_size: int = 84
    resample: Resample = Resample.bilinear


@dataclass
class FolderConfig(DatasetConfig):
    name: str = "folder"
    image_size: int = 28
    channels: int = 3  # 1 = grayscale, 3 = RGB
    resample: Resample = Resample.bilinear
    split_ratios: List[float] = field(default_factory=lambda: [0.64, 0.16, 0.20])  # for a single folder of classes
    split_seed: int = 0
    augment_splits: List[str] = field(default_factory=list)
