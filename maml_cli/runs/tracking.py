"""Weights & Biases: one run per job (``train`` or ``eval``), placed, named and tagged by the same rules."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import wandb

from maml_cli.config import LoggerConfig, TrainConfig, WandbMode
from maml_cli.data import DATASETS


def task_tag(ways: int | None, shots: int) -> str:
    """``5w1s`` for 5-way 1-shot tasks; ``10shot`` without ways (regression)."""
    return f"{shots}shot" if ways is None else f"{ways}w{shots}s"


def training_task_tag(config: TrainConfig) -> str:
    """The :func:`task_tag` of a training run: ways only for classification (a regression task has no classes)."""
    classification = DATASETS[config.dataset.name].task_kind == "classification"
    return task_tag(config.ways if classification else None, config.shots)


def experiment_group(config: TrainConfig) -> str:
    """The W&B group of a single training run: its experiment ``name``, else its dataset and task
    (``omniglot-5w1s``), so that the runs of one setting (seeds, restarts) share it."""
    return config.name or f"{config.dataset.name}-{training_task_tag(config)}"


def override_key(override: str) -> str:
    """The key of a command-line override: ``model.hidden`` for ``+model.hidden=[8,8]``."""
    return override.lstrip("+~").split("=", 1)[0]


def under(key: str, roots: Iterable[str]) -> bool:
    """Whether ``key`` is one of ``roots`` or below one of them (``logger.mode`` is below ``logger``)."""
    return any(key == root or key.startswith(f"{root}.") for root in roots)


def run_name(overrides: Iterable[str], unnamed: Iterable[str]) -> str:
    """A W&B run name: the ``overrides``, sorted and comma-separated as Hydra's ``override_dirname``, without
    those of the ``unnamed`` keys (and their sub-keys); ``defaults`` when none is left."""
    unnamed = list(unnamed)
    return ",".join(sorted(o for o in overrides if not under(override_key(o), unnamed))) or "defaults"


def open_run(
    job_type: str,
    logger: LoggerConfig,
    *,
    name: str,
    group: str,
    tags: list[str],
    output_dir: Path,
    config: dict,
    origin: dict | None = None,
    resume: bool = False,
):
    """The W&B run of a ``job_type`` job, its files under ``output_dir``; mode ``disabled`` gives a no-op run.

    ``origin`` is the :func:`run_identity` of the training run the job belongs to. The run goes into
    its project (else ``logger.project``). With ``resume`` the job continues that run (its id and
    group); otherwise the run is its own, in ``logger.group``, else ``group``. ``logger.tags`` follow ``tags``.
    """
    origin = origin or {}
    continued = origin if resume else {}
    return wandb.init(
        project=origin.get("project") or logger.project,
        entity=logger.entity,
        mode=logger.mode.value,
        group=continued.get("group") or logger.group or group,
        job_type=job_type,
        name=name,
        tags=[*tags, *logger.tags],
        dir=str(output_dir),
        config=config,
        id=continued.get("id"),
        resume="allow" if continued.get("id") else None,
    )


def run_identity(run, logger: LoggerConfig) -> dict:
    """What a checkpoint keeps to continue ``run``, or to evaluate into its group (all None when tracking is off)."""
    tracked = logger.mode is not WandbMode.disabled
    return {
        "id": run.id if tracked else None,
        "project": run.project if tracked else None,
        "group": run.group if tracked else None,
        "dir": str(run.dir) if tracked else None,
    }
