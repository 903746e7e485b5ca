"""``maml-compare RUN_DIR... [--output DIR]``: tables and a figure of training runs (plain argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path

from maml_cli.errors import MamlError
from maml_cli.evaluation import compare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="maml-compare",
        description="Compare training runs: the settings that differ, with validation and test scores as mean ± "
        "std over the seeds of each setting, ranked by best validation score, and their validation curves. "
        "Works offline from the run directories alone.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a training run or multirun directory")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where comparison.csv, runs.csv and validation_curves.png go (default: the current directory)",
    )
    args = parser.parse_args(argv)
    try:
        print(compare(args.paths, args.output))
    except MamlError as error:
        error.exit()
    written = ", ".join(str(args.output / name) for name in ("comparison.csv", "runs.csv"))
    print(f"\nwrote {written} and {args.output / 'validation_curves.png'}")
