"""Where datasets live on disk, and the cache of processed tensors.

Data root of dataset ``name``: ``cfg.root`` if set, else the first of ``$MAML_DATA_ROOT/<name>``,
``~/.maml_cli/data/<name>`` and ``./data/<name>`` that holds the dataset.
Cache: ``cfg.cache_dir``, else ``$MAML_CACHE_DIR``, else ``~/.cache/maml_cli``.
The commands set ``$MAML_DATA_ROOT`` and ``$MAML_CACHE_DIR`` from ``paths.data_root`` and ``paths.cache_dir``
(see ``maml_cli.cli.paths``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from maml_cli.data.config import DatasetConfig

log = logging.getLogger(__name__)


def data_roots(cfg: DatasetConfig) -> list[Path]:
    """Candidate roots of ``cfg``'s dataset, in order of preference."""
    if cfg.root:
        return [Path(cfg.root).expanduser().absolute()]
    parents = [os.environ.get("MAML_DATA_ROOT"), "~/.maml_cli/data", "./data"]
    return [Path(p).expanduser().absolute() / cfg.name for p in parents if p]


def find_root(cfg: DatasetConfig, has_data: Callable[[Path], bool]) -> Path | None:
    """The first candidate root that ``has_data``, or None."""
    return next((root for root in data_roots(cfg) if has_data(root)), None)


def is_clutter(path: str) -> bool:
    """Whether ``path`` (``/``-separated, relative to the data) is not data: under a ``__MACOSX/`` folder, or
    hidden (``.DS_Store``, ``._*`` AppleDouble files), as macOS leaves them in archives and folders."""
    return any(part == "__MACOSX" or part.startswith(".") for part in path.split("/"))


def cache_dir(cfg: DatasetConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("MAML_CACHE_DIR") or "~/.cache/maml_cli").expanduser()


def fingerprint(path: Path) -> str:
    """A hash of a file's content, or of a folder's file names, sizes and modification times."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    else:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached(cfg: DatasetConfig, tag: str, key: dict, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``build()``'s tensors, saved once in the cache under a hash of ``key`` (JSON-serialisable).

    A cache file that cannot be read is rebuilt; a cache folder that cannot be written only warns.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir(cfg) / f"{tag}-{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as err:  # any unreadable file is just a stale cache
            log.warning("rebuilding unreadable cache file %s (%s)", path, err)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(data, f)
            os.replace(tmp, path)  # atomic: readers see the old file or the complete new one
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as err:
        warnings.warn(f"cannot write dataset cache {path}: {err}; set cache_dir to a writable folder", stacklevel=2)
    return data
