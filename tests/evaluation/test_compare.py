"""maml-compare: what differs between runs, their validation and test scores, best first, and a figure."""
import csv

import pytest

from evaluation_helpers import cli
from maml_cli.errors import MamlError
from maml_cli.evaluation import compare

from conftest import TINY


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two sinusoid runs that differ only in the inner learning rate, as one multirun directory."""
    out = tmp_path_factory.mktemp("sweep")
    cli("train", "-m", "dataset=sinusoid", "iterations=4", "test_tasks=4", "algorithm.lr=0.001,0.05", *TINY,
        f"hydra.sweep.dir={out}", cwd=out)
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
