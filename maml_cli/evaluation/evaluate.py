"""``maml-eval``: a checkpoint's adaptation curve on fixed episodes, with 95% confidence intervals and spread.

Writes ``eval.json`` and ``curve.png`` (plus ``fits.png`` for sinusoids) to the output directory and
logs a W&B run with ``job_type=eval`` lined up with the training run (see ``Trained.open_run``): its
numbers under ``eval/<split>/``, the curve as a table and a line plot, the figures as images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import wandb

from maml_cli.config import EvalConfig
from maml_cli.core import BatchNormPolicy, MetaLearner
from maml_cli.data import build_dataset
from maml_cli.errors import MamlError
from maml_cli.evaluation.plots import plot_curves, plot_sinusoid_fits
from maml_cli.evaluation.restore import Trained, load_trained, restore_learner
from maml_cli.runs.metrics import adaptation_curve, mean_ci95, metric_name
from maml_cli.runs.tracking import task_tag
from maml_cli.runtime import resolve_device

log = logging.getLogger(__name__)


def spread(scores: torch.Tensor) -> dict[str, float]:
    """Mean ± 95% CI half-width of per-task ``scores``, their std, min, quartiles and max."""
    mean, ci95 = mean_ci95(scores)
    q1, median, q3 = torch.quantile(scores.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {
        "mean": mean,
        "ci95": ci95,
        "std": scores.double().std().item(),
        "min": scores.min().item(),
        "q1": q1,
        "median": median,
        "q3": q3,
        "max": scores.max().item(),
    }


def evaluate(config: EvalConfig, output_dir: Path) -> dict:
    """Adapt on ``config.tasks`` fixed episodes, scoring after each of 0..k steps; the report of ``eval.json``."""
    trained = load_trained(config, config.data_root)
    train = trained.config
    shape = {
        "ways": config.ways or train.ways,
        "shots": config.shots or train.shots,
        "queries": config.queries or train.queries,
    }
    if trained.task_kind == "classification":
        trained.check_ways(shape["ways"], f"ways={shape['ways']}")
    device = resolve_device(config.device)
    dataset = build_dataset(train.dataset)
    learner = restore_learner(trained, dataset, device)
    _set_policy(learner, trained, config)
    steps = train.algorithm.eval_steps if config.steps is None else config.steps
    episodes = dataset.episodes(config.split, *shape.values(), config.tasks, seed=config.seed, device=device)

    start = time.perf_counter()
    curve = adaptation_curve(learner, episodes, steps=steps, lr=config.lr, label=f"{config.split} tasks")
    seconds = time.perf_counter() - start
    scores = (curve.accuracies if learner.classification else curve.losses).cpu()
    if not learner.classification:
        del shape["ways"]
    points = [{"step": step, **spread(scores[:, step])} for step in range(steps + 1)]
    report = {
        "checkpoint": trained.source,
        "dataset": train.dataset.name,
        "split": config.split,
        **shape,
        "tasks": config.tasks,
        "seed": config.seed,
        "steps": steps,
        "lr": config.lr,
        "batchnorm": learner.inner.batchnorm.value,
        "metric": metric_name(learner),
        "final": points[-1],
        "curve": points,
        "seconds": seconds,
        "tasks_per_s": config.tasks / seconds,
    }
    figures = [_write(report, output_dir)]
    if not learner.classification and config.plot_tasks:
        parameters = dataset.task_parameters(
            config.split, shape["shots"], shape["queries"], config.plot_tasks, config.seed
        )
        plot_sinusoid_fits(
            learner,
            episodes[: config.plot_tasks],
            *parameters,
            dataset.x_range,
            steps,
            config.lr,
            output_dir / "fits.png",
        )
        figures.append(output_dir / "fits.png")
    _track(report, trained, config, output_dir, figures)
    return report


def _write(report: dict, output_dir: Path) -> Path:
    """``eval.json``, ``curve.png`` (its path returned) and a log line of the final score."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval.json").write_text(json.dumps(report, indent=2))
    split, metric, final = report["split"], report["metric"], report["final"]
    plot_curves(
        {f"{report['tasks']} {split} tasks": report["curve"]},
        "adaptation step",
        f"{split} {metric}",
        output_dir / "curve.png",
    )
    log.info(
        "%s %s after %d steps on %d tasks: %.4f ± %.4f (std %.4f, min %.4f, max %.4f), adapted in %.1f s",
        split,
        metric,
        report["steps"],
        report["tasks"],
        final["mean"],
        final["ci95"],
        final["std"],
        final["min"],
        final["max"],
        report["seconds"],
    )
    return output_dir / "curve.png"


def _set_policy(learner: MetaLearner, trained: Trained, config: EvalConfig) -> None:
    """Apply the evaluation-only settings: the BatchNorm policy and the number of tasks adapted together."""
    policy = config.batchnorm or learner.inner.batchnorm
    if policy is BatchNormPolicy.per_step and not len(learner.step_buffers):
        raise MamlError(
            f"batchnorm=per_step needs per-step statistics, but checkpoint {trained.path} was trained "
            "with batchnorm=transductive; evaluate it with batchnorm=transductive"
        )
    learner.inner = dataclasses.replace(
        learner.inner, batchnorm=policy, eval_chunk=config.eval_chunk or learner.inner.eval_chunk
    )


def _track(report: dict, trained: Trained, config: EvalConfig, output_dir: Path, figures: list[Path]) -> None:
    """The W&B eval run: numbers under ``eval/<split>/`` in the summary, the curve as a table and a line plot,
    ``figures`` (PNG files) as images."""
    prefix = f"eval/{report['split']}"
    key = f"{prefix}/{report['metric']}"
    task = task_tag(report.get("ways"), report["shots"])
    settings = {k: v for k, v in report.items() if k not in ("checkpoint", "final", "curve", "seconds", "tasks_per_s")}
    detail = f"{report['split']} {report['steps']} steps"
    with trained.open_run("eval", config.logger, output_dir, task, settings, detail) as run:
        run.define_metric("adaptation/step")
        run.define_metric(f"{key}_curve*", step_metric="adaptation/step")
        for point in report["curve"]:
            run.log(
                {"adaptation/step": point["step"], f"{key}_curve": point["mean"], f"{key}_curve_ci95": point["ci95"]}
            )
        columns = list(report["curve"][0])  # step, mean, ci95, std, min, q1, median, q3, max
        table = wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in report["curve"]])
        title = f"{report['split']} {report['metric']} after each adaptation step"
        run.log(
            {
                f"{key}_adaptation": wandb.plot.line(table, "step", "mean", title=title),  # and the table: ..._table
                **{f"{prefix}/{figure.stem}": wandb.Image(str(figure)) for figure in figures},
            }
        )
        stats = {stat: value for stat, value in report["final"].items() if stat != "step"}
        run.summary.update({key if stat == "mean" else f"{key}_{stat}": value for stat, value in stats.items()})
        run.summary.update({f"{key}_pre": report["curve"][0]["mean"], "eval/seconds": report["seconds"]})
