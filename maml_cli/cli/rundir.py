"""Run directories of their own: a unique name per job, and a lock while a process writes into one.

``${maml_unique:}`` (in ``conf/hydra/default.yaml``) follows the start time in the default run and
sweep directories, so that jobs started in the same second do not share one. :class:`RunDirLock`, a
Hydra callback, holds ``.maml.lock`` in the run (or sweep) directory with ``flock`` before Hydra
writes there: a second live process given the same directory is refused. The kernel drops the lock
when its process dies, so a killed run can be resumed at once. Under torchrun only rank 0 locks.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from maml_cli.errors import MamlError

LOCK = ".maml.lock"

log = logging.getLogger(__name__)


def unique_token() -> str:
    """Six random hex digits, e.g. ``3fa9c1``: what tells apart jobs started in the same second."""
    return secrets.token_hex(3)


# cached: one token per composed config, so a job's run dir (and a sweep's dir) is resolved the same every time
OmegaConf.register_new_resolver("maml_unique", unique_token, use_cache=True)


def torchrun_follower() -> bool:
    """Whether this process is a rank other than 0 of a torchrun job (rank 0 writes the job's files)."""
    return int(os.environ.get("RANK", "0")) > 0


def lock_run_dir(directory: Path, key: str = "hydra.run.dir") -> int:
    """Create ``directory`` and lock it for this process; MamlError if it is not writable or in use.

    Returns the lock's file descriptor: the lock lasts until it is closed or the process ends.
    ``key`` is the setting that chose the directory (named in the messages).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise MamlError(
            f"cannot write into {key}={directory}: {error.strerror or error}; choose a writable {key}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise MamlError(
            f"{key}={directory} is in use by another running process (pid {owner}); wait for it to "
            f"end, or choose another {key}"
        ) from None
    except OSError as error:  # a file system without flock (some network mounts): carry on unlocked
        log.warning("cannot lock %s (%s): make sure that no other process writes there", directory, error.strerror)
        return fd
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class RunDirLock(Callback):
    """Hydra callback: the run (or sweep) directory is this process's until the command ends."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock(config, "hydra.sweep.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    on_multirun_end = on_run_end

    def _lock(self, config: DictConfig, key: str) -> None:
        if torchrun_follower():  # rank 0 holds the job's lock for all ranks
            return
        try:
            self.fd = lock_run_dir(Path(OmegaConf.select(config, key)), key)
        except MamlError as error:  # outside the task function: report it the way the commands do
            error.exit()
