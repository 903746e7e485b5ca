"""Resuming a run: which checkpoint, and which settings (the checkpoint's, except the run-control keys given again)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from maml_cli.config import TrainConfig
from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import atomic_write, load_checkpoint
from maml_cli.runtime import train_config_from_dict

log = logging.getLogger(__name__)

# keys that may change between a run and its resumption: how long, where, how often to report
RUN_CONTROL = (
    "iterations",
    "device",
    "log_every",
    "val_every",
    "checkpoint_every",
    "test_tasks",
    "resume",
    "logger",
    "dataset.root",
    "dataset.cache_dir",
    "dist_timeout_s",
)
# what a checkpoint needs to continue a run (see ``maml_cli.runs.checkpoints``)
RESUMABLE = ("config", "learner", "optimizer", "scheduler", "step", "best", "rng", "wandb", "history")


def config_dict(config: TrainConfig) -> dict:
    """The resolved config as plain data (Enums as strings), as W&B and checkpoints store it."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)


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


def load_resumable(path: Path) -> dict:
    """The checkpoint at ``path``; MamlError naming it unless it holds everything a run continues from."""
    state = load_checkpoint(path)
    missing = [key for key in RESUMABLE if key not in state]
    if missing:
        raise MamlError(
            f"checkpoint {path} cannot be resumed: it lacks {', '.join(missing)} "
            f"(a training checkpoint holds {', '.join(RESUMABLE)})"
        )
    return state


def check_weights(path: Path, checkpoint: dict, learner: torch.nn.Module) -> None:
    """MamlError naming checkpoint ``path`` unless its weights fit ``learner``, built from its own config."""
    weights, expected = checkpoint["learner"], learner.state_dict()
    problems = [f"{name} is missing" for name in expected if name not in weights]
    problems += [f"{name} is not in that model" for name in weights if name not in expected]
    problems += [
        f"{name} has shape {list(weights[name].shape)}, the model's {list(tensor.shape)}"
        for name, tensor in expected.items()
        if name in weights and weights[name].shape != tensor.shape
    ]
    if problems:
        model = " ".join(f"{key}={value}" for key, value in checkpoint["config"]["model"].items())
        raise MamlError(
            f"checkpoint {path}: its weights do not fit the model of its own config ({model}): "
            f"{'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}"
        )


def resumed_config(saved: dict, current: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """The checkpoint's config, with the ``overrides`` of run-control keys taken from ``current``.

    Any other override that differs from the checkpoint would change what is being trained, so it
    is ignored with a warning (repeating the original command line with ``resume=true`` is fine).
    """
    merged, now = OmegaConf.create(saved), OmegaConf.create(config_dict(current))
    keys = {override: override.lstrip("+~").split("=", 1)[0] for override in overrides}
    control = {key for key in keys.values() if any(key == k or key.startswith(f"{k}.") for k in RUN_CONTROL)}
    for key in control:
        OmegaConf.update(merged, key, OmegaConf.select(now, key), merge=False)
    ignored = [
        override
        for override, key in keys.items()
        if key not in control and OmegaConf.select(merged, key) != OmegaConf.select(now, key)
    ]
    if ignored:
        log.warning(
            "resuming with the checkpoint's settings; ignoring %s (only %s may change)",
            " ".join(ignored),
            ", ".join(RUN_CONTROL),
        )
    return train_config_from_dict(OmegaConf.to_container(merged))


def adopt_best(checkpoint: Path, output_dir: Path) -> None:
    """Resuming another run's checkpoint: copy its ``best.pt`` here, so this run dir is complete."""
    source, target = checkpoint.parent / "best.pt", output_dir / "checkpoints" / "best.pt"
    if source.is_file() and not target.exists():
        atomic_write(target, source.read_bytes())
