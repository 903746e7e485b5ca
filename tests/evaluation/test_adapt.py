"""maml-adapt: adapt on labelled image folders, then classify a folder of new images into a CSV."""

import csv

import numpy as np
from PIL import Image

from maml_cli.config import AdaptConfig, LoggerConfig, WandbMode
from maml_cli.evaluation import adapt_folders
from tests.evaluation.evaluation_helpers import cli, inspect, model_versions, run_record, wandb_run


def image(path, size, mode="RGB", seed=0):
    """A random image of ``size`` (any size and colour mode: maml-adapt converts them)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


def test_predicts_one_row_per_query_image_with_classes_from_the_support_folders(omniglot_run, tmp_path):
    for k, name in enumerate(["alpha", "beta", "gamma"]):
        for shot in range(2):
            image(tmp_path / "support" / name / f"{shot}.png", (40 + 10 * shot, 30), "RGB" if shot else "L", seed=k)
    queries = [f"q{i}.{ext}" for i, ext in enumerate(["png", "jpg", "png", "bmp"])]
    for i, name in enumerate(queries):
        image(tmp_path / "query" / name, (28 + i, 28), seed=10 + i)

    cli(
        "adapt",
        f"run={omniglot_run}",
        f"support={tmp_path / 'support'}",
        f"query={tmp_path / 'query'}",
        "steps=3",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )

    with (tmp_path / "out" / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["file"] for row in rows] == sorted(queries)
    assert {row["class"] for row in rows} <= {"alpha", "beta", "gamma"}
    assert all(1 / 3 <= float(row["probability"]) <= 1 for row in rows)

    train_dir, adapt_dir = wandb_run(omniglot_run), wandb_run(tmp_path / "out")  # lined up with the training run
    logged = inspect(adapt_dir)
    assert run_record(adapt_dir)["job_type"] == "adapt" and logged["config"]["ways"] == 5
    assert logged["config"]["adapt"]["classes"] == ["alpha", "beta", "gamma"]
    assert logged["summary"]["adapt/predictions"]["nrows"] == len(queries)
    [used] = model_versions(adapt_dir, "best.pt")  # its input: the training run's best.pt
    assert used["digest"] == model_versions(train_dir, "best.pt")[-1]["digest"]


def test_writes_the_csv_where_output_says(omniglot_run, tmp_path):
    for name in ("a", "b"):
        image(tmp_path / "support" / name / "x.png", (28, 28), seed=len(name))
    image(tmp_path / "query" / "only.png", (28, 28))
    target = tmp_path / "elsewhere" / "labels.csv"

    cli(
        "adapt",
        f"checkpoint={omniglot_run / 'checkpoints' / 'last.pt'}",
        f"support={tmp_path / 'support'}",
        f"query={tmp_path / 'query'}",
        f"output={target}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )

    assert target.read_text().splitlines()[0] == "file,class,probability"
    assert len(target.read_text().splitlines()) == 2


def test_names_a_spreadsheet_would_run_as_formulas_are_escaped(omniglot_run, tmp_path):
    for name in ("=cmd", "b"):
        image(tmp_path / "support" / name / "0.png", (28, 28), seed=len(name))
    queries = ["=1+1.png", "+a.png", "-b.png", "@c.png", "\tt.png", "\rr.png", "plain.png"]
    for i, name in enumerate(queries):
        image(tmp_path / "query" / name, (28, 28), seed=i)
    config = AdaptConfig(
        run=str(omniglot_run),
        support=str(tmp_path / "support"),
        query=str(tmp_path / "query"),
        logger=LoggerConfig(mode=WandbMode.disabled),
    )

    with adapt_folders(config, tmp_path / "out").open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert sorted(row["file"] for row in rows) == sorted(["'" + q for q in queries[:-1]] + ["plain.png"])
    assert {row["class"] for row in rows} <= {"'=cmd", "b"}
