"""Checkpoints: atomic writes, safe reads (``weights_only``), and every RNG state a run depends on.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), ``format`` ``maml-cli/1``:
``config`` (the resolved config), ``learner``, ``optimizer``, ``scheduler``, ``step`` (meta-steps
done), ``best`` (``metric``, ``value``, ``step``), ``rng`` (``python``, ``numpy``, ``torch``,
``cuda``, ``sampler``), ``wandb`` (``id``, ``project``, ``group``, ``dir``) and ``history``
(the validation results so far).
"""
from __future__ import annotations

import io
import os
import random
import secrets
from pathlib import Path

import numpy as np
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
        raise MamlError(f"cannot write {path}: {error.strerror or error}; any earlier {path.name} is left "
                        "as it was") from None


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
        raise MamlError(f"cannot read checkpoint {path}: truncated, corrupt or not a maml-cli checkpoint "
                        f"({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise MamlError(f"{path} is not a maml-cli checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def find_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint that ``resume`` asks for, or None to start afresh.

    ``true``: this job's ``checkpoints/last.pt`` if it exists (so a re-queued job continues);
    a path: that checkpoint file, or the ``last.pt`` of that run dir (which must exist).
    """
    if resume is None or resume.lower() in ("false", "none", "null", ""):
        return None
    if resume.lower() == "true":
        last = output_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = next((p for p in (path / "checkpoints" / "last.pt", path / "last.pt") if p.is_file()), path)
        if path.is_dir():
            raise MamlError(f"resume={resume}: no checkpoints/last.pt in that directory")
    if not path.is_file():
        raise MamlError(f"resume={resume}: no such checkpoint file or run directory")
    return path


def rng_state(sampler) -> dict:
    """Python's, NumPy's, torch's (CPU and CUDA) and the task sampler's RNG states, as plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": sampler.state_dict(),
    }


def restore_rng(state: dict, sampler) -> None:
    """Undo :func:`rng_state`: every generator continues exactly where it was saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    sampler.load_state_dict(state["sampler"])
