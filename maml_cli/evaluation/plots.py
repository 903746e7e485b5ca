"""PNG figures: curves with 95% confidence bands, and adapted sinusoid fits (the MAML paper's Figure 2)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from maml_cli.core import MetaLearner, TaskBatch


def plot_curves(curves: dict[str, list[dict]], xlabel: str, ylabel: str, path: Path, x: str = "step") -> None:
    """One line per named curve, points ``{x, "mean", "ci95"}``, with its mean ± 95% CI band."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, points in curves.items():
        xs = [p[x] for p in points]
        mean, ci95 = torch.tensor([[p["mean"], p["ci95"]] for p in points]).T
        ax.plot(xs, mean, marker="o", markersize=3, label=label)
        ax.fill_between(xs, mean - ci95, mean + ci95, alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def plot_sinusoid_fits(
    learner: MetaLearner, tasks: TaskBatch, amplitude, phase, x_range, steps: int, lr: float | None, path: Path
) -> None:
    """Each task's true curve, support points and the model's fit after 0, 1 and ``steps`` inner steps."""
    grid = torch.linspace(*x_range, 200, device=tasks.x_support.device).unsqueeze(1)
    shown = sorted({0, min(1, steps), steps})
    fig = Figure(figsize=(4.0 * len(tasks), 3.4), layout="constrained")
    for i, ax in enumerate(fig.subplots(1, len(tasks), squeeze=False)[0]):
        x, y = tasks.x_support[i], tasks.y_support[i]
        ax.plot(grid.cpu(), amplitude[i] * torch.sin(grid.cpu() - phase[i]), color="black", label="ground truth")
        for step in shown:
            fit = learner.predict(learner.adapt(x, y, steps=step, lr=lr), grid, step=step)
            ax.plot(grid.cpu(), fit.cpu(), linestyle="--", label=f"after {step} step{'' if step == 1 else 's'}")
        ax.scatter(x.cpu(), y.cpu(), marker="^", color="tab:red", zorder=3, label=f"{len(x)} support points")
        ax.set(title=f"A={amplitude[i]:.2f}, phase={phase[i]:.2f}", xlabel="x")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
