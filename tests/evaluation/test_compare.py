"""maml-compare: what differs between runs, their validation and test scores, best first, and a figure."""

import csv
import json
import math
import re

import pytest

from maml_cli.errors import MamlError
from maml_cli.evaluation import compare
from maml_cli.evaluation.compare import find_runs
from tests.evaluation.conftest import TINY
from tests.evaluation.evaluation_helpers import cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two sinusoid runs that differ only in the inner learning rate, as one multirun directory."""
    out = tmp_path_factory.mktemp("sweep")
    cli(
        "train",
        "-m",
        "dataset=sinusoid",
        "iterations=4",
        "test_tasks=4",
        "algorithm.lr=0.001,0.05",
        *TINY,
        f"hydra.sweep.dir={out}",
        cwd=out,
    )
    return out


def test_table_lists_the_differing_settings_beside_the_scores_best_first(sweep, tmp_path):
    done = cli("compare", str(sweep), "--output", str(tmp_path), cwd=tmp_path)

    with (tmp_path / "comparison.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["run", "algorithm.lr", "val_mse", "val_ci95", "best_step", "test_mse", "test_ci95"]
    assert sorted(row["algorithm.lr"] for row in rows) == ["0.001", "0.05"]
    assert float(rows[0]["test_mse"]) <= float(rows[1]["test_mse"])  # lower MSE is better
    assert "algorithm.lr" in done.stdout and "±" in done.stdout
    assert (tmp_path / "validation_curves.png").stat().st_size > 0


def test_run_directories_can_be_named_one_by_one(sweep, sinusoid_run, tmp_path):
    table = compare([sweep / "0", sinusoid_run], tmp_path)
    assert "name" in table.splitlines()[0]  # tiny-sinusoid versus default
    assert "algorithm.lr" in table.splitlines()[0]


def test_a_directory_without_runs_is_an_error(tmp_path):
    with pytest.raises(MamlError, match="neither a training run directory nor a multirun directory"):
        compare([tmp_path], tmp_path)


RESULTS = {
    "metric": "mse",
    "best": {"step": 2},
    "validation": [{"step": 2, "mean": 0.5, "ci95": 0.1}],
    "test": None,
    "config": {"algorithm": {"lr": 0.01}},
}
EXPECTED = (
    r"; expected a training run's results.json: a JSON object with metric \(acc or mse\), best \{step\}, "
    r"validation \[\{step, mean, ci95\}, \.\.\.\], test \(null or \{mean, ci95\}\) and config \{\.\.\.\}$"
)


def run_dir(path, content: bytes):
    """A run directory whose results.json holds ``content``."""
    path.mkdir(parents=True)
    (path / "results.json").write_bytes(content)
    return path


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"[]", r" holds \[\], not a JSON object"),
        (b'{"foo": 1}', r" has missing or malformed metric, best, validation, config"),
        (
            json.dumps({**RESULTS, "validation": [{"step": 2, "mean": "high"}]}).encode(),
            r" has missing or malformed validation",
        ),
        (b"\xff\xfe{}", r" \('utf-8' codec can't decode byte 0xff in position 0: invalid start byte\)"),
        (json.dumps(RESULTS).encode()[:30], r" \(Unterminated string starting at: line 1 column 28 \(char 27\)\)"),
    ],
)
def test_a_malformed_results_json_is_named_with_what_is_expected(tmp_path, content, problem):
    runs = [run_dir(tmp_path / "good", json.dumps(RESULTS).encode()), run_dir(tmp_path / "bad", content)]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "comparison.csv").write_text("earlier")
    file = re.escape(str(runs[1] / "results.json"))
    with pytest.raises(MamlError, match=f"^(cannot read )?{file}{problem}{EXPECTED}"):
        compare(runs, tmp_path / "out")
    assert [(p.name, p.read_text()) for p in (tmp_path / "out").iterdir()] == [("comparison.csv", "earlier")]
    assert find_runs(runs[:1])[0].results == RESULTS


def test_a_malformed_results_json_is_one_line_on_stderr(tmp_path):
    run = run_dir(tmp_path / "run", b'{"foo": 1}')
    done = cli("compare", str(run), "--output", str(tmp_path / "out"), cwd=tmp_path, check=False)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"Error: {run / 'results.json'} has missing or malformed metric, best, validation")
    assert not (tmp_path / "out").exists()


def regression_run(path, validation: list[float], test: float | None, lr: float):
    """A run directory of validation MSEs at steps 100, 200, ..., the best one's test MSE and ``algorithm.lr``."""
    history = [{"step": 100 * (i + 1), "mean": mean, "ci95": 0.5} for i, mean in enumerate(validation)]
    best = min(history, key=lambda v: (math.isnan(v["mean"]), v["mean"]))
    return run_dir(
        path,
        json.dumps(
            {
                "metric": "mse",
                "best": {"metric": "val/mse", "value": best["mean"], "step": best["step"]},
                "validation": history,
                "test": None if test is None else {"step": best["step"], "mean": test, "ci95": 0.5},
                "config": {"algorithm": {"lr": lr}},
            }
        ).encode(),
    )


def test_a_diverged_run_whose_scores_are_nan_ranks_last(tmp_path):
    regression_run(tmp_path / "sweep" / "0", [math.nan] * 3, math.nan, lr=10.0)
    regression_run(tmp_path / "sweep" / "1", [15.0, 12.4], 12.4, lr=0.001)
    regression_run(tmp_path / "sweep" / "2", [9.0, 8.2], None, lr=0.01)  # no test: ranked by validation
    compare([tmp_path / "sweep"], tmp_path / "out")

    with (tmp_path / "out" / "comparison.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(row["run"], row["algorithm.lr"]) for row in rows] == [("2", "0.01"), ("1", "0.001"), ("0", "10.0")]
    assert rows[2]["val_mse"] == rows[2]["test_mse"] == "nan"
