"""``maml-compare``: training runs side by side, from their run directories alone (``results.json``).

Runs that differ only by their seed are one setting. The table lists the settings that differ beside
each setting's best validation and test scores (mean ± std over its seeds, and their number n), and on
request the wall-clock minutes each took to reach given validation scores, ranked by best validation score;
the figures overlay the settings' mean validation curves, against meta-steps and against wall-clock minutes.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from maml_cli.errors import MamlError
from maml_cli.evaluation.plots import plot_curves

# settings that do not change what a run learns
IGNORED = (
    "resume",
    "device",
    "logger",
    "log_every",
    "checkpoint_every",
    "dist_timeout_s",
    "dataset.root",
    "dataset.cache_dir",
    "paths",  # the data, cache and output roots
)
SEED = "seed"


@dataclass
class Run:
    name: str
    results: dict

    @property
    def validation(self) -> dict | None:
        """The best validation entry (``step``, ``mean``, ``ci95``)."""
        best = self.results["best"]["step"]
        return next((v for v in self.results["validation"] if v["step"] == best), None)

    @cached_property
    def config(self) -> dict:
        """The run's settings, as dotted keys."""
        return _flatten(self.results["config"])

    def mean(self, split: str) -> float | None:
        """The best validation mean (``split="val"``) or the test mean; None if not measured."""
        result = self.validation if split == "val" else self.results.get("test")
        return result["mean"] if result else None


@dataclass
class Setting:
    """Runs with the same settings but their seeds: ``values`` of the differing keys, as text."""

    values: dict[str, str]
    runs: list[Run]

    @property
    def label(self) -> str:
        """The differing settings and the number of runs (``algorithm.lr=0.01, shots=5 (n=3)``), for legends."""
        return self.label_of(list(self.values))

    def label_of(self, keys: list[str]) -> str:
        """``label`` with the settings of ``keys`` only."""
        return f"{', '.join(f'{key}={self.values[key]}' for key in keys) or 'all runs'} (n={len(self.runs)})"

    def spread(self, split: str) -> tuple[float, float | None, int]:
        """Mean and sample std (None for one run) of the runs' ``split`` scores, and how many runs have one."""
        return _spread([m for r in self.runs if (m := r.mean(split)) is not None])

    def score(self, metric: str) -> float:
        """What ranks the settings: the mean best validation score, higher is better.

        Unscored settings and non-finite scores (a diverged seed's NaN) rank last.
        """
        mean, _, count = self.spread("val")
        if not count or not math.isfinite(mean):
            return -math.inf
        return mean if metric == "acc" else -mean

    def curve(self) -> list[dict]:
        """The mean validation curve over the seeds, at the steps all of them reached (``ci95``: the std), with
        the mean wall-clock ``minutes`` of training and validation at each step when every run recorded it."""
        histories = [{v["step"]: v for v in r.results["validation"]} for r in self.runs]
        points = []
        for step in sorted(set.intersection(*(set(h) for h in histories))):
            mean, std, _ = _spread([h[step]["mean"] for h in histories])
            point = {"step": step, "mean": mean, "ci95": std or 0.0}
            if all(h[step].get("elapsed_s") is not None for h in histories):  # runs before max_time have none
                point["minutes"] = _spread([h[step]["elapsed_s"] / 60 for h in histories])[0]
            points.append(point)
        return points

    def minutes_to(self, score: float) -> tuple[float, int]:
        """Mean wall-clock minutes at the first validation that reached ``score`` (at least, for accuracy; at
        most, for MSE), over the runs that reached it and recorded its time; and how many did."""
        better = (lambda v: v >= score) if self.runs[0].results["metric"] == "acc" else (lambda v: v <= score)
        first = [next((v for v in r.results["validation"] if better(v["mean"])), {}) for r in self.runs]
        mean, _, count = _spread([v["elapsed_s"] / 60 for v in first if v.get("elapsed_s") is not None])
        return mean, count


def find_runs(paths: list[Path]) -> list[Run]:
    """The runs at ``paths``: run directories, or multirun directories holding them."""
    found = []
    for path in paths:
        files = [path / "results.json"] if (path / "results.json").is_file() else sorted(path.glob("*/results.json"))
        if not files:
            raise MamlError(f"{path} is neither a training run directory nor a multirun directory (no results.json)")
        found += files
    found = list(dict.fromkeys(f.resolve() for f in found))  # a run named twice counts once
    base = os.path.commonpath([f.parent for f in found]) if len(found) > 1 else None
    runs = []
    for file in found:
        name = os.path.relpath(file.parent, base) if base else file.parent.name
        runs.append(Run(name, _read_results(file)))
    if len({r.results["metric"] for r in runs}) > 1:
        raise MamlError("cannot rank classification runs (accuracy) against regression runs (MSE); compare them apart")
    return runs


def _read_results(file: Path) -> dict:
    """The results in ``file``, checked to hold what ``maml-compare`` reads."""
    expected = (
        "expected a training run's results.json: a JSON object with metric (acc or mse), best {step}, "
        "validation [{step, mean, ci95}, ...], test (null or {mean, ci95}) and config {...}"
    )
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # not UTF-8 (UnicodeDecodeError) or not JSON (JSONDecodeError)
        raise MamlError(f"cannot read {file} ({error}); {expected}") from None
    if not isinstance(results, dict):
        raise MamlError(f"{file} holds {json.dumps(results)[:40]}, not a JSON object; {expected}")

    def numbers(entry, keys: tuple[str, ...]) -> bool:
        return isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in keys)

    valid = {
        "metric": results.get("metric") in ("acc", "mse"),
        "best": isinstance(results.get("best"), dict) and "step" in results["best"],
        "validation": isinstance(results.get("validation"), list)
        and all(numbers(v, ("step", "mean", "ci95")) for v in results["validation"]),
        "test": results.get("test") is None or numbers(results["test"], ("mean", "ci95")),
        "config": isinstance(results.get("config"), dict),
    }
    if not all(valid.values()):
        raise MamlError(
            f"{file} has missing or malformed {', '.join(k for k, ok in valid.items() if not ok)}; {expected}"
        )
    return results


def differing(runs: list[Run]) -> list[str]:
    """The config keys (dotted) whose values are not the same in every run, but the seed.

    A key that always has the same value as one before it (``dataset.shots`` beside ``shots``) is left out.
    """
    keys = sorted({k for r in runs for k in r.config if not k.startswith(IGNORED) and k != SEED})
    columns: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: (k.count("."), k)):  # top-level keys first
        column = [json.dumps(r.config.get(key)) for r in runs]
        if len(set(column)) > 1 and column not in columns.values():
            columns[key] = column
    return [k for k in keys if k in columns]


def settings(runs: list[Run]) -> list[Setting]:
    """The runs grouped by the settings that differ (runs that differ only by seed together), best first."""
    keys = differing(runs)
    groups: dict[tuple, Setting] = {}
    for run in runs:
        values = {k: _text(run.config.get(k)) for k in keys}
        groups.setdefault(tuple(values.values()), Setting(values, [])).runs.append(run)
    metric = runs[0].results["metric"]
    return sorted(groups.values(), key=lambda s: s.score(metric), reverse=True)


def compare(
    paths: list[Path], output: Path, reach: tuple[float, ...] = (), shown: tuple[str, ...] | None = None
) -> str:
    """Write ``comparison.csv`` (the table: a row per setting, with the minutes to each ``reach`` score),
    ``runs.csv`` (a row per run, with each run's 95% CIs and best step), ``validation_curves.png`` and, when the
    runs recorded their times, ``validation_minutes.png`` to ``output``; the table as text. ``shown``: the
    differing settings that label the text table's rows and the figures' curves (default: all; the CSVs
    always have all)."""
    ranked = settings(find_runs(paths))
    keys, metric = list(ranked[0].values), ranked[0].runs[0].results["metric"]
    labels = keys if shown is None else list(shown)
    if not set(labels) <= set(keys):
        unknown = ", ".join(k for k in labels if k not in keys)
        raise MamlError(f"{unknown}: not among the settings that differ between these runs: {', '.join(keys)}")
    if len({s.label_of(labels) for s in ranked}) < len(ranked):
        raise MamlError(
            f"showing only {', '.join(labels)}, two settings look the same; add one of: "
            + ", ".join(k for k in keys if k not in labels)
        )
    output.mkdir(parents=True, exist_ok=True)
    _write_csv(
        output / "comparison.csv",
        [
            *keys,
            "n",
            f"val_{metric}",
            f"val_{metric}_std",
            f"test_{metric}",
            f"test_{metric}_std",
            *(f"minutes_to_{score:g}" for score in reach),
            "runs",
        ],
        [
            [
                *s.values.values(),
                len(s.runs),
                *_summary(s, "val"),
                *_summary(s, "test"),
                *(_reached(s, score) for score in reach),
                _names(s),
            ]
            for s in ranked
        ],
    )
    _write_csv(
        output / "runs.csv",
        ["run", *keys, SEED, f"val_{metric}", "val_ci95", "best_step", f"test_{metric}", "test_ci95"],
        [[r.name, *s.values.values(), _text(r.config.get(SEED)), *_scores(r)] for s in ranked for r in s.runs],
    )
    curves = {s.label_of(labels): s.curve() for s in ranked}
    ylabel = f"validation {metric} (mean ± std over seeds)"
    plot_curves({k: v for k, v in curves.items() if v}, "meta-step", ylabel, output / "validation_curves.png")
    timed = {k: v for k, v in curves.items() if v and all("minutes" in p for p in v)}
    (output / "validation_minutes.png").unlink(missing_ok=True)  # not an earlier comparison's
    if timed:
        xlabel = "wall-clock minutes of training and validation"
        plot_curves(timed, xlabel, ylabel, output / "validation_minutes.png", x="minutes")
    better = "higher" if metric == "acc" else "lower"
    title = f"ranked by best validation {metric} ({better} is better); mean ± std over the n seeds of each setting"
    if reach:
        title += "; minutes: wall-clock time to the first validation that reached the score (mean over seeds)"
    return title + "\n" + _table(labels, metric, ranked, reach)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])


def _summary(setting: Setting, split: str) -> list:
    """Mean and std of the setting's ``split`` scores for the CSV (empty when not measured or one run)."""
    mean, std, count = setting.spread(split)
    return [mean if count else "", "" if std is None else std]


def _reached(setting: Setting, score: float) -> float | str:
    """The setting's mean minutes to ``score`` for the CSV (empty when no run reached it)."""
    minutes, count = setting.minutes_to(score)
    return minutes if count else ""


def _names(setting: Setting) -> str:
    return ";".join(r.name for r in setting.runs)


def _scores(run: Run) -> list:
    """Best validation mean, CI and step; test mean and CI (empty when not measured)."""
    val, test = run.validation or {}, run.results.get("test") or {}
    return [val.get("mean", ""), val.get("ci95", ""), val.get("step", ""), test.get("mean", ""), test.get("ci95", "")]


def _table(keys: list[str], metric: str, ranked: list[Setting], reach: tuple[float, ...] = ()) -> str:
    """Aligned text: the settings, n, each score as ``mean ± std`` and the minutes to each ``reach`` score
    (``(k of n)`` when only k runs have it)."""

    def of(setting: Setting, text: str, count: int) -> str:
        return text if count in (0, len(setting.runs)) else f"{text} ({count} of {len(setting.runs)})"

    def cell(setting: Setting, split: str) -> str:
        mean, std, count = setting.spread(split)
        return of(setting, "-" if not count else f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}", count)

    def minutes(setting: Setting, score: float) -> str:
        mean, count = setting.minutes_to(score)
        return of(setting, f"{mean:.1f}" if count else "-", count)

    lines = [[*keys, "n", f"val {metric}", f"test {metric}", *(f"min to {score:g}" for score in reach)]]
    lines += [
        [
            *(s.values[k] for k in keys),
            str(len(s.runs)),
            cell(s, "val"),
            cell(s, "test"),
            *(minutes(s, r) for r in reach),
        ]
        for s in ranked
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _spread(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (None for fewer than two values) and count of ``values``."""
    if not values:
        return math.nan, None, 0
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std, len(values)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
