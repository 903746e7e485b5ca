"""``maml-compare``: training runs side by side, from their run directories alone (``results.json``).

The table lists the settings that differ between the runs beside each run's best validation score
and test score (mean ± 95% CI), best run first; the figure overlays their validation curves.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from maml_cli.errors import MamlError
from maml_cli.evaluation.plots import plot_curves

# settings that do not change what a run learns
IGNORED = ("resume", "device", "logger", "log_every", "checkpoint_every", "dataset.root", "dataset.cache_dir")


@dataclass
class Run:
    name: str
    results: dict

    @property
    def validation(self) -> dict | None:
        """The best validation entry (``step``, ``mean``, ``ci95``)."""
        best = self.results["best"]["step"]
        return next((v for v in self.results["validation"] if v["step"] == best), None)

    @property
    def score(self) -> float:
        """What ranks the runs: the test mean, else the best validation mean; higher is better.

        Unscored runs and non-finite scores (a diverged run's NaN) rank last.
        """
        result = self.results.get("test") or self.validation
        if result is None or not math.isfinite(result["mean"]):
            return -math.inf
        return result["mean"] if self.results["metric"] == "acc" else -result["mean"]


def find_runs(paths: list[Path]) -> list[Run]:
    """The runs at ``paths``: run directories, or multirun directories holding them."""
    found = []
    for path in paths:
        files = [path / "results.json"] if (path / "results.json").is_file() else sorted(path.glob("*/results.json"))
        if not files:
            raise MamlError(f"{path} is neither a training run directory nor a multirun directory (no results.json)")
        found += files
    base = os.path.commonpath([f.parent.resolve() for f in found]) if len(found) > 1 else None
    runs = []
    for file in found:
        name = os.path.relpath(file.parent.resolve(), base) if base else file.parent.name
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
    """The config keys (dotted) whose values are not the same in every run."""
    flat = [_flatten(r.results["config"]) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(IGNORED)})
    return [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]


def compare(paths: list[Path], output: Path) -> str:
    """Write ``comparison.csv`` and ``validation_curves.png`` to ``output``; the table as text."""
    runs = sorted(find_runs(paths), key=lambda r: r.score, reverse=True)
    keys = differing(runs)
    metric = runs[0].results["metric"]
    rows = [[r.name, *(_text(_flatten(r.results["config"]).get(k)) for k in keys), *_scores(r)] for r in runs]
    header = ["run", *keys, f"val_{metric}", "val_ci95", "best_step", f"test_{metric}", "test_ci95"]
    output.mkdir(parents=True, exist_ok=True)
    with (output / "comparison.csv").open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    curves = {r.name: r.results["validation"] for r in runs if r.results["validation"]}
    plot_curves(curves, "meta-step", f"validation {metric}", output / "validation_curves.png")
    return _table(header, rows, len(keys))


def _scores(run: Run) -> list:
    """Best validation mean, CI and step; test mean and CI (empty when not measured)."""
    val, test = run.validation or {}, run.results.get("test") or {}
    return [val.get("mean", ""), val.get("ci95", ""), val.get("step", ""), test.get("mean", ""), test.get("ci95", "")]


def _table(header: list[str], rows: list[list], settings: int) -> str:
    """Aligned text, with each mean and its CI shown together as ``mean ± ci``."""

    def pair(mean, ci95) -> str:
        return f"{mean:.4f} ± {ci95:.4f}" if mean != "" else "-"

    metric = header[-2].removeprefix("test_")
    lines = [[*header[: 1 + settings], f"val {metric}", "step", f"test {metric}"]]
    for row in rows:
        val_mean, val_ci, step, test_mean, test_ci = row[1 + settings :]
        lines.append([*row[: 1 + settings], pair(val_mean, val_ci), str(step), pair(test_mean, test_ci)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


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
