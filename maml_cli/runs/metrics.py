"""Scores of fixed episodes: the per-task score after adaptation, its mean ± 95% confidence interval, and which
score is better."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch
from torch import Tensor

from maml_cli.core import AdaptationCurve, MetaLearner, TaskBatch
from maml_cli.runs.progress import progress_bar

Score = TypeVar("Score")


def metric_name(learner: MetaLearner) -> str:
    """``acc`` (higher is better) for classification, ``mse`` (lower is better) for regression."""
    return "acc" if learner.classification else "mse"


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` (None: no score yet); a non-finite score is worse than any finite one."""
    if best is None:
        return True
    if not math.isfinite(value):
        return False
    return not math.isfinite(best) or (value > best if metric == "acc" else value < best)


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval, 1.96·std/√n (n ≥ 2)."""
    values = values.double()
    return values.mean().item(), 1.96 * values.std().item() / math.sqrt(values.numel())


def episode_scores(learner: MetaLearner, episodes: TaskBatch, steps: int | None = None) -> Tensor:
    """Adapt every episode (``steps`` default: ``eval_steps``); each one's query score (float64, maybe none)."""
    if not len(episodes):  # a process's share of a few episodes may be empty
        return torch.empty(0, dtype=torch.float64, device=episodes.x_query.device)
    curve = learner.evaluate(episodes, steps=steps)
    final = curve.accuracies[:, -1] if learner.classification else curve.losses[:, -1]
    return final.double()


def score_episodes(learner: MetaLearner, episodes: TaskBatch, steps: int | None = None) -> dict[str, float]:
    """Adapt every episode (``steps`` default: ``eval_steps``) and score its query set: mean and ci95."""
    mean, ci95 = mean_ci95(episode_scores(learner, episodes, steps))
    return {"mean": mean, "ci95": ci95}


def in_chunks(
    score: Callable[[TaskBatch], Score],
    episodes: TaskBatch,
    size: int,
    label: str,
    show: bool = True,
    stop: Callable[[], bool] | None = None,
) -> list[Score] | None:
    """``score`` of each chunk of at most ``size`` ``episodes``, in order, with a progress bar over the episodes.

    The bar shows on a terminal when ``show`` (rank 0). An empty batch is one empty chunk (a process's share of
    a few episodes may be empty). None if ``stop()`` turns true before a chunk.
    """
    scores = []
    with progress_bar(len(episodes), label, "task", show=show, leave=False, mininterval=0) as bar:  # drawn per chunk
        for chunk in episodes.chunks(size) or [episodes]:
            if stop and stop():
                return None
            scores.append(score(chunk))
            bar.update(len(chunk))
    return scores


def adaptation_curve(
    learner: MetaLearner, episodes: TaskBatch, steps: int | None = None, lr: float | None = None, label: str = "tasks"
) -> AdaptationCurve:
    """``learner.evaluate`` with a progress bar: the same curve, from the same chunks of ``eval_chunk`` episodes."""
    parts = in_chunks(partial(learner.evaluate, steps=steps, lr=lr), episodes, learner.inner.eval_chunk, label)
    accuracies = [part.accuracies for part in parts if part.accuracies is not None]
    return AdaptationCurve(torch.cat([part.losses for part in parts]), torch.cat(accuracies) if accuracies else None)
