"""Checkpoint files: atomic writes and safe reads (``weights_only``) of the ``maml-cli/1`` format.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), ``format`` ``maml-cli/1``:
``config`` (the resolved config), ``learner``, ``optimizer``, ``scheduler``, ``step`` (meta-steps
done), ``best`` (``metric``, ``value``, ``step``), ``rng`` (``python``, ``numpy``, ``torch``,
``cuda``, ``sampler``), ``wandb`` (``id``, ``project``, ``group``, ``dir``) and ``history``
(the validation results so far).
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import torch

from maml_cli.errors import MamlError

FORMAT = "maml-cli/1"


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` all at once: a reader (or a crash) never sees a partial file.

    The file gets the mode that ``open()`` gives (0666 less the umask). An OSError (disk full,
    read-only directory, ...) becomes a MamlError naming the path; an earlier file stays whole.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise MamlError(
            f"cannot write {path}: {error.strerror or error}; any earlier {path.name} is left as it was"
        ) from None


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files that a process killed inside :func:`atomic_write` left in ``run_dir``
    and its ``checkpoints/``; returns them. Call it before this run writes there."""
    stale = [tmp for folder in (run_dir, run_dir / "checkpoints") for tmp in folder.glob(".*.tmp") if tmp.is_file()]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (a maml-cli checkpoint dict) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buffer)
    atomic_write(Path(path), buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path`` (tensors on the CPU); MamlError if it is missing, damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise MamlError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, objects weights_only refuses, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MamlError(
            f"cannot read checkpoint {path}: truncated, corrupt or not a maml-cli checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise MamlError(f"{path} is not a maml-cli checkpoint (format {found!r}, expected {FORMAT!r})")
    return state
