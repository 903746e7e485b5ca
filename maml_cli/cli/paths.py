"""The paths a command is given: relative ones are relative to the directory it started in.

``hydra.job.chdir=true`` runs a job inside its run directory: :func:`absolute_paths` first makes each
setting that names a file or folder absolute against the directory the command started in, so that
``resume=outputs/...``, ``dataset.root=data/omniglot`` or ``paths.data_root=data`` mean the same with it
and without it. :func:`exported_paths` hands ``paths.data_root`` and ``paths.cache_dir`` to the data layer
as ``$MAML_DATA_ROOT`` and ``$MAML_CACHE_DIR``, whose defaults they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# the settings of maml-train, maml-eval and maml-adapt that name a file or folder (each command has some)
PATH_KEYS = (
    *("paths.data_root", "paths.cache_dir", "paths.output_root", "dataset.root", "dataset.cache_dir"),
    *("resume", "init_from", "checkpoint", "run", "data_root", "support", "query", "output"),
)
NOT_A_PATH = {"true", "false", "none", "null", ""}  # resume=true: this job's own checkpoint
ENVIRONMENT = {"data_root": "MAML_DATA_ROOT", "cache_dir": "MAML_CACHE_DIR"}  # paths.* read by maml_cli.data


def absolute_paths(cfg: DictConfig, cwd: Path) -> None:
    """Make each path setting of ``cfg`` absolute, ``~`` expanded, relative ones against ``cwd``."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value.lower() not in NOT_A_PATH:
            OmegaConf.update(cfg, key, str(cwd / Path(value).expanduser()))


@contextmanager
def exported_paths(paths: DictConfig) -> Iterator[None]:
    """``paths.data_root`` and ``paths.cache_dir``, when set, as the data layer's environment variables
    while the command runs (a multirun's next job starts from the environment as it was)."""
    before = {name: os.environ.get(name) for name in ENVIRONMENT.values()}
    os.environ.update({name: paths[key] for key, name in ENVIRONMENT.items() if paths[key] is not None})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
