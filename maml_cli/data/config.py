"""What every dataset's settings share; each dataset's own dataclass lives in its module.

A dataset's dataclass is used from Python and as Hydra's schema for ``conf/dataset/<name>.yaml``.
``ways``, ``shots`` and ``queries`` live at the top level of a run's config; the dataset group reads
them by interpolation and keeps no copy of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


def choice(value: Any) -> str:
    """A choice's string value, whether given as one of the Enums below or as plain text (from YAML)."""
    return value.value if isinstance(value, Enum) else str(value)


class Resample(str, Enum):
    lanczos = "lanczos"
    bilinear = "bilinear"
    bicubic = "bicubic"
    nearest = "nearest"
    box = "box"


@dataclass
class DatasetConfig:
    """Fields every dataset has; image datasets also tell their ``channels`` (1: grayscale, 3: RGB)."""

    name: str = "???"
    root: str | None = None  # None: $MAML_DATA_ROOT (paths.data_root), then ~/.maml_cli/data, then ./data
    cache_dir: str | None = None  # None: $MAML_CACHE_DIR (paths.cache_dir), else ~/.cache/maml_cli
