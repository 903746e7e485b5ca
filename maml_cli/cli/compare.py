"""``maml-compare RUN_DIR... [--output DIR] [--reach S,...] [--keys K,...]``: tables and figures of runs (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path

from maml_cli.errors import MamlError
from maml_cli.evaluation import compare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="maml-compare",
        description="Compare training runs: the settings that differ, with validation and test scores as mean ± "
        "std over the seeds of each setting, ranked by best validation score (and with --reach the minutes to given "
        "scores), and their validation curves against meta-steps and wall-clock minutes. Works offline from the "
        "run directories alone.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a training run or multirun directory")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where comparison.csv, runs.csv and the figures go (default: the current directory)",
    )
    parser.add_argument(
        "--reach",
        type=scores,
        default=(),
        metavar="S,...",
        help="validation scores (e.g. 0.9,0.95,0.97): add the wall-clock minutes each setting took to reach them",
    )
    parser.add_argument(
        "--keys",
        type=lambda text: tuple(text.split(",")),
        metavar="K,...",
        help="the differing settings that label the table's rows and the figures' curves, e.g. name (default: all)",
    )
    args = parser.parse_args(argv)
    try:
        print(compare(args.paths, args.output, args.reach, args.keys))
    except MamlError as error:
        error.exit()
    figures = ("validation_curves.png", "validation_minutes.png")
    written = [args.output / name for name in ("comparison.csv", "runs.csv", *figures)]
    print(f"\nwrote {', '.join(str(path) for path in written if path.exists())}")


def scores(text: str) -> tuple[float, ...]:
    """A comma list of validation scores, as numbers."""
    try:
        return tuple(float(score) for score in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers, e.g. 0.9,0.95,0.97") from None
