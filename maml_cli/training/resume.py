"""How a training job starts: afresh, resumed (its own checkpoint), forked (another run's checkpoint, continued as
a new run) or from another run's weights (``init_from``); which settings it runs with, and who it is.

A resumed run keeps the checkpoint's settings, except the run-control keys given again, and its name, group
and W&B run. A fork keeps the settings too, but is a new run (a new W&B id) that records its parent; an
``init_from`` run is new in every way but the weights that fit its model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf

from maml_cli.config import TrainConfig
from maml_cli.core import MetaLearner
from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import atomic_write, load_checkpoint
from maml_cli.runs.tracking import experiment_group, override_key, run_name, under
from maml_cli.runtime import train_config_from_dict

if TYPE_CHECKING:
    from maml_cli.training.writer import RunInfo

log = logging.getLogger(__name__)

# keys that may change between a run and its resumption: how long, where, how often to report
RUN_CONTROL = (
    "iterations",
    "max_time",
    "device",
    "log_every",
    "val_every",
    "checkpoint_every",
    "test_tasks",
    "resume",
    "logger",
    "dataset.root",
    "dataset.cache_dir",
    "paths",
    "dist_timeout_s",
)
# what a checkpoint needs to continue a run (see ``maml_cli.runs.checkpoints``)
RESUMABLE = ("config", "learner", "optimizer", "scheduler", "step", "best", "rng", "wandb", "history")


def config_dict(config: TrainConfig) -> dict:
    """The resolved config as plain data (Enums as strings), as W&B and checkpoints store it."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)


@dataclass
class Start:
    """What a job starts from: nothing (``new``), the checkpoint at ``path`` (holding ``state``) of this run
    (``resumed``) or of another (``fork``), or another run's weights (``init_from``)."""

    kind: str = "new"
    path: Path | None = None
    state: dict | None = None

    @property
    def continues(self) -> bool:
        """Whether training continues the checkpoint: its settings, step, optimiser and random streams."""
        return self.kind in ("resumed", "fork")

    @property
    def step(self) -> int:
        """The meta-step training starts after."""
        return self.state["step"] if self.continues else 0

    @property
    def lineage(self) -> dict | None:
        """A fork's or an init_from run's parent: ``kind`` (of this start), ``run_dir``, ``checkpoint``,
        ``wandb_id``, ``name``, ``step`` (None for other starts)."""
        if self.kind not in ("fork", "init_from"):
            return None
        checkpoint = self.path.resolve()
        identity = self.state.get("wandb") or {}
        return {
            "kind": self.kind,
            "run_dir": str(checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent),
            "checkpoint": str(checkpoint),
            "wandb_id": identity.get("id"),
            "name": identity.get("name"),
            "step": self.state.get("step"),
        }


def _off(value: str | None) -> bool:
    """Whether a ``resume`` value asks for no checkpoint."""
    return value is None or value.lower() in ("false", "none", "null", "")


def find_start(config: TrainConfig, output_dir: Path) -> Start:
    """How a job with ``config`` starts in ``output_dir``: from ``config.resume``'s checkpoint (see
    :func:`find_checkpoint`; resumed when it is this run dir's own, else forked), else from ``config.init_from``'s
    weights, else afresh. ``resume=true`` with ``init_from`` resumes a job that already wrote a checkpoint (a
    requeued one) and starts the others from ``init_from``; ``init_from`` with a ``resume`` path is refused."""
    if config.init_from and not _off(config.resume) and config.resume.lower() != "true":
        raise MamlError(
            f"resume={config.resume} and init_from={config.init_from} cannot be combined: resume continues a run "
            "with its settings, init_from starts a new run from a checkpoint's weights; give one of them"
        )
    path = find_checkpoint(config.resume, output_dir)
    if path:
        own = path.resolve().parent == (output_dir / "checkpoints").resolve()
        return Start("resumed" if own else "fork", path, load_resumable(path))
    if config.init_from:
        path = checkpoint_file("init_from", config.init_from, ("best.pt", "last.pt"))
        return Start("init_from", path, load_checkpoint(path))
    return Start()


def find_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint that ``resume`` asks for, or None to start afresh.

    ``true``: this job's ``checkpoints/last.pt`` if it exists (so a re-queued job continues);
    a path: that checkpoint file, or the ``last.pt`` of that run dir (which must exist).
    """
    if _off(resume):
        return None
    if resume.lower() == "true":
        last = output_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    return checkpoint_file("resume", resume, ("last.pt",))


def checkpoint_file(key: str, value: str, names: tuple[str, ...]) -> Path:
    """The checkpoint of the setting ``key=value``: that file, or in that run dir (or its ``checkpoints/``)
    the first of ``names`` there; a relative path is relative to the working directory."""
    path = Path(value).expanduser()
    if path.is_dir():
        found = (folder / name for name in names for folder in (path / "checkpoints", path))
        path = next((file for file in found if file.is_file()), path)
        if path.is_dir():
            raise MamlError(f"{key}={value}: no checkpoints/{' or '.join(names)} in that directory")
    if not path.is_file():
        raise MamlError(f"{key}={value}: no such checkpoint file or run directory")
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
        raise MamlError(
            f"checkpoint {path}: its weights do not fit the model of its own config "
            f"({describe_model(checkpoint['config'])}): {'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}"
        )


def describe_model(values: dict) -> str:
    """``name=mlp hidden=[40, 40]``: the model settings of a config dict."""
    return " ".join(f"{key}={value}" for key, value in values["model"].items())


def init_weights(start: Start, learner: MetaLearner, config: TrainConfig) -> None:
    """Start ``learner`` (of ``config``) from the weights of ``start``'s checkpoint that fit it: same name and shape.

    Inner learning rates come from the checkpoint only when both runs learn them (else they are this run's
    ``algorithm`` settings). One log line names the tensors kept, those initialised afresh (and why) and the
    checkpoint's tensors left unused; MamlError when none of the network's weights fit.
    """
    weights, own = start.state["learner"], learner.state_dict()
    rates = {f"inner_lr.{name}" for name, _ in learner.inner_lr.named_parameters()}
    learned = config.algorithm.learn_lr and start.state["config"]["algorithm"]["learn_lr"]
    kept, fresh = {}, []
    for name, tensor in own.items():
        theirs = weights.get(name)
        if name in rates and not learned:
            fresh.append(f"{name} (this run's algorithm.lr)")
        elif theirs is None:
            fresh.append(f"{name} (not in the checkpoint)")
        elif theirs.shape != tensor.shape:
            fresh.append(f"{name} (shape {list(theirs.shape)} there, {list(tensor.shape)} here)")
        else:
            kept[name] = theirs
    if not set(kept) - rates:
        values = config_dict(config)
        raise MamlError(
            f"init_from={config.init_from}: none of the weights of {start.path} fit this model "
            f"(it holds {describe_model(start.state['config'])}, this run {describe_model(values)})"
        )
    learner.load_state_dict({**own, **kept})
    unused = [name for name in weights if name not in own]
    log.info(
        "init_from %s (step %s): kept %s; initialised afresh: %s; not used: %s",
        start.path,
        start.state.get("step"),
        ", ".join(kept),
        ", ".join(fresh) or "nothing",
        ", ".join(unused) or "nothing",
    )


def identify(info: RunInfo, start: Start, config: TrainConfig, ignored: Sequence[str] = ()) -> RunInfo:
    """``info`` (this job as the CLI saw it) as the run it is: its name, group, overrides, choices, lineage and
    starts (what each start was given, and its step).

    The run's overrides are those of this start that were not ``ignored``, after its checkpoint's when it
    continues one. A run resumed in place keeps its name, group, choices and lineage, and adds this start to its
    starts. Any other run is named by its overrides (less ``info.unnamed``); its group is ``logger.group``, else
    the sweep's, else the :func:`experiment_group` of ``config`` (for a fork, its parent's settings).
    """
    saved = (start.state.get("wandb") or {}) if start.continues else {}
    given = {"overrides": list(info.overrides), "step": start.step}
    taken = [override for override in info.overrides if override not in ignored]
    overrides = list({override_key(o): o for o in [*saved.get("overrides", []), *taken]}.values())
    choices = {**info.choices, **(start.state.get("job") or {}).get("choices", {})} if start.continues else info.choices
    group = config.logger.group or info.sweep or experiment_group(config)
    if start.kind == "resumed":
        return dataclasses.replace(
            info,
            overrides=overrides,
            choices=choices,
            name=saved.get("name") or run_name(overrides, info.unnamed),
            group=saved.get("group") or group,
            lineage=saved.get("lineage"),
            starts=[*saved.get("starts", []), given],
        )
    return dataclasses.replace(
        info,
        overrides=overrides,
        choices=choices,
        name=run_name(overrides, info.unnamed),
        group=group,
        lineage=start.lineage,
        starts=[given],
    )


def resumed_config(saved: dict, current: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """The checkpoint's config, with the ``overrides`` of run-control keys taken from ``current``.

    Any other override that differs from the checkpoint would change what is being trained, so it
    is ignored with a warning (repeating the original command line with ``resume=true`` is fine).
    """
    merged, ignored = _resumed(saved, current, overrides)
    if ignored:
        log.warning(
            "resuming with the checkpoint's settings; ignoring %s (only %s may change)",
            " ".join(ignored),
            ", ".join(RUN_CONTROL),
        )
    return train_config_from_dict(OmegaConf.to_container(merged))


def ignored_overrides(saved: dict, current: TrainConfig, overrides: Sequence[str]) -> list[str]:
    """The ``overrides`` that resuming from the ``saved`` config ignores (see :func:`resumed_config`)."""
    return _resumed(saved, current, overrides)[1]


def _resumed(saved: dict, current: TrainConfig, overrides: Sequence[str]):
    """The ``saved`` config with the run-control ``overrides`` taken from ``current``, and the overrides ignored."""
    merged, now = OmegaConf.create(saved), OmegaConf.create(config_dict(current))
    keys = {override: override_key(override) for override in overrides}
    control = {key for key in keys.values() if under(key, RUN_CONTROL)}
    for key in control:
        OmegaConf.update(merged, key, OmegaConf.select(now, key), merge=False)
    ignored = [
        override
        for override, key in keys.items()
        if key not in control and OmegaConf.select(merged, key) != OmegaConf.select(now, key)
    ]
    return merged, ignored


def adopt_best(checkpoint: Path, output_dir: Path) -> None:
    """Resuming another run's checkpoint: copy its ``best.pt`` here, so this run dir is complete."""
    source, target = checkpoint.parent / "best.pt", output_dir / "checkpoints" / "best.pt"
    if source.is_file() and not target.exists():
        atomic_write(target, source.read_bytes())
