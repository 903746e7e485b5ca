"""maml-compare: the settings that differ, their scores as mean ± std over seeds ranked by validation, a figure."""

import csv
import json
import math
import re

import pytest

from maml_cli.errors import MamlError
from maml_cli.evaluation import compare
from maml_cli.evaluation.compare import find_runs, settings
from tests.evaluation.conftest import TINY
from tests.evaluation.evaluation_helpers import cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Four sinusoid runs, two shots by two seeds, as one multirun directory."""
    out = tmp_path_factory.mktemp("sweep")
    cli(
        "train",
        "-m",
        "dataset=sinusoid",
        "iterations=4",
        "test_tasks=4",
        "shots=5,10",
        "seed=0,1",
        *TINY,
        f"hydra.sweep.dir={out}",
        cwd=out,
    )
    return out


def rows(path):
    with path.open() as file:
        return list(csv.DictReader(file))


def test_two_settings_by_two_seeds_are_two_rows_of_mean_and_std_ranked_by_validation(sweep, tmp_path):
    done = cli("compare", str(sweep), "--output", str(tmp_path), cwd=tmp_path)

    title, header, *table = done.stdout.split("\n\n")[0].splitlines()
    assert title.startswith("ranked by best validation mse (lower is better)")
    assert header.split() == ["shots", "n", "val", "mse", "test", "mse"]  # not dataset.shots, its copy
    assert len(table) == 2 and all(line.split()[1] == "2" and line.count("±") == 2 for line in table)
    by_setting = rows(tmp_path / "comparison.csv")
    assert list(by_setting[0]) == ["shots", "n", "val_mse", "val_mse_std", "test_mse", "test_mse_std", "runs"]
    assert sorted(row["shots"] for row in by_setting) == ["10", "5"] and {row["n"] for row in by_setting} == {"2"}
    assert float(by_setting[0]["val_mse"]) <= float(by_setting[1]["val_mse"])  # lower MSE is better
    runs = rows(tmp_path / "runs.csv")
    for setting in by_setting:
        seeds = [run for run in runs if run["shots"] == setting["shots"]]
        assert sorted(run["seed"] for run in seeds) == ["0", "1"]
        assert setting["runs"] == ";".join(run["run"] for run in seeds)
        a, b = (float(run["val_mse"]) for run in seeds)
        assert float(setting["val_mse"]) == (a + b) / 2  # exact: one rounded sum, halved
        # the sample std of two values; rel: the rounding of two ways of computing it
        assert float(setting["val_mse_std"]) == pytest.approx(abs(a - b) / math.sqrt(2), rel=1e-12)
    assert (tmp_path / "validation_curves.png").stat().st_size > 0


def test_curves_are_the_mean_over_seeds_labelled_by_the_settings_that_differ(sweep):
    ranked = settings(find_runs([sweep]))

    assert sorted(setting.label for setting in ranked) == ["shots=10 (n=2)", "shots=5 (n=2)"]
    for setting in ranked:
        histories = [run.results["validation"] for run in setting.runs]
        means = [(a["mean"] + b["mean"]) / 2 for a, b in zip(*histories)]  # exact: one rounded sum, halved
        assert [(point["step"], point["mean"]) for point in setting.curve()] == list(zip([2, 4], means))


def test_minutes_to_a_score_are_the_wall_clock_of_the_first_validation_that_reached_it(sweep, tmp_path):
    # MSE: reaching 1000 is any validation's (the first), reaching 0 none's
    done = cli("compare", str(sweep), "--output", str(tmp_path), "--reach", "1000,0", cwd=tmp_path)

    header = done.stdout.splitlines()[1]
    assert header.split()[-6:] == ["min", "to", "1000", "min", "to", "0"]
    for setting in rows(tmp_path / "comparison.csv"):
        results = [json.loads((sweep / run / "results.json").read_text()) for run in setting["runs"].split(";")]
        first = [r["validation"][0] for r in results]
        assert float(setting["minutes_to_1000"]) == (first[0]["elapsed_s"] / 60 + first[1]["elapsed_s"] / 60) / 2
        assert setting["minutes_to_0"] == ""  # never reached: empty in the CSV, "-" in the table
    assert all(line.rstrip().endswith(" -") for line in done.stdout.split("\n\n")[0].splitlines()[2:])
    assert (tmp_path / "validation_minutes.png").stat().st_size > 0 and "validation_minutes.png" in done.stdout


def test_a_score_that_is_not_a_number_is_refused_with_an_example(sweep, tmp_path):
    done = cli("compare", str(sweep), "--reach", "95%", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "'95%' is not a comma list of numbers, e.g. 0.9,0.95,0.97" in done.stderr


def test_run_directories_can_be_named_one_by_one(sweep, sinusoid_run, tmp_path):
    table = compare([sweep / "0", sinusoid_run], tmp_path)
    header = table.splitlines()[1]
    assert "name" in header and "shots" in header  # tiny-sinusoid at 10 shots versus default at 5


def test_the_table_shows_the_chosen_settings_and_the_csv_all_that_differ(sweep, sinusoid_run, tmp_path):
    table = compare([sweep / "0", sinusoid_run], tmp_path, shown=("shots",))

    assert table.splitlines()[1].split()[:2] == ["shots", "n"]
    assert {"name", "shots"} <= set(rows(tmp_path / "comparison.csv")[0])
    with pytest.raises(MamlError, match=r"^ways: not among the settings that differ between these runs: .*shots"):
        compare([sweep / "0", sinusoid_run], tmp_path, shown=("ways",))
    # runs 0 and 2 of the sweep differ by their shots alone: their names (none) do not tell them apart
    with pytest.raises(MamlError, match=r"^showing only name, two settings look the same; add one of: .*shots"):
        compare([sweep / "0", sweep / "2", sinusoid_run], tmp_path, shown=("name",))


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


def regression_run(path, validation: list[float], test: float | None, lr: float, seed: int = 0):
    """A run directory of validation MSEs at steps 100, 200, ..., the best one's test MSE, ``algorithm.lr`` and
    ``seed``."""
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
                "config": {"algorithm": {"lr": lr}, "seed": seed},
            }
        ).encode(),
    )


def test_a_diverged_run_whose_scores_are_nan_ranks_last(tmp_path):
    regression_run(tmp_path / "sweep" / "0", [math.nan] * 3, math.nan, lr=10.0)
    regression_run(tmp_path / "sweep" / "1", [15.0, 12.4], 12.4, lr=0.001)
    regression_run(tmp_path / "sweep" / "2", [9.0, 8.2], None, lr=0.01)  # no test: ranked by validation
    compare([tmp_path / "sweep"], tmp_path / "out")

    ranked = rows(tmp_path / "out" / "comparison.csv")
    assert [(row["runs"], row["algorithm.lr"]) for row in ranked] == [("2", "0.01"), ("1", "0.001"), ("0", "10.0")]
    assert ranked[2]["val_mse"] == ranked[2]["test_mse"] == "nan"


def test_runs_that_differ_only_by_seed_are_one_row_of_mean_std_and_n(tmp_path):
    for seed, (val, test) in enumerate([(1.0, 2.0), (3.0, 4.0), (5.0, None)]):
        regression_run(tmp_path / "sweep" / str(seed), [val], test, lr=0.01, seed=seed)
    regression_run(tmp_path / "sweep" / "3", [2.5], 1.0, lr=0.1)
    table = compare([tmp_path / "sweep"], tmp_path / "out")

    # exact: mean 3 and std sqrt(((1-3)² + 0 + (5-3)²) / 2) = 2; the test mean 3 and std sqrt(2) of 2 and 4
    assert table.splitlines()[1:] == [
        "algorithm.lr  n  val mse          test mse",
        "0.1           1  2.5000           1.0000",
        "0.01          3  3.0000 ± 2.0000  3.0000 ± 1.4142 (2 of 3)",
    ]
    ranked = rows(tmp_path / "out" / "comparison.csv")
    assert [list(row.values()) for row in ranked] == [
        ["0.1", "1", "2.5", "", "1.0", "", "3"],
        ["0.01", "3", "3.0", "2.0", "3.0", str(math.sqrt(2)), "0;1;2"],
    ]
    per_run = rows(tmp_path / "out" / "runs.csv")
    assert [(run["run"], run["seed"], run["val_ci95"], run["best_step"]) for run in per_run] == [
        ("3", "0", "0.5", "100"),
        ("0", "0", "0.5", "100"),
        ("1", "1", "0.5", "100"),
        ("2", "2", "0.5", "100"),
    ]


def test_settings_are_ranked_by_validation_even_where_the_test_score_disagrees(tmp_path):
    regression_run(tmp_path / "sweep" / "0", [4.0], 1.0, lr=0.01)
    regression_run(tmp_path / "sweep" / "1", [2.0], 9.0, lr=0.1)
    table = compare([tmp_path / "sweep"], tmp_path / "out")

    assert table.splitlines()[0].startswith("ranked by best validation mse (lower is better)")
    assert [row["algorithm.lr"] for row in rows(tmp_path / "out" / "comparison.csv")] == ["0.1", "0.01"]


def test_a_run_named_twice_counts_once(tmp_path):
    regression_run(tmp_path / "sweep" / "0", [4.0], 1.0, lr=0.01)
    assert [run.name for run in find_runs([tmp_path / "sweep", tmp_path / "sweep" / "0"])] == ["0"]
