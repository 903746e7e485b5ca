"""maml-eval: adaptation curves with confidence intervals, eval.json, figures, and the W&B eval run."""

import hashlib
import json
import math

from tests.evaluation.evaluation_helpers import cli, inspect, model_versions, run_record, wandb_run


def test_omniglot_curve_has_a_confidence_interval_and_spread_per_step(omniglot_run, omniglot_root, tmp_path):
    cli(
        "eval",
        f"run={omniglot_run}",
        f"data_root={omniglot_root}",
        "tasks=6",
        "steps=3",
        "queries=3",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )

    report = json.loads((tmp_path / "eval.json").read_text())
    assert (report["split"], report["ways"], report["shots"], report["queries"], report["tasks"]) == (
        "test",
        5,
        1,
        3,
        6,
    )
    assert report["metric"] == "acc"
    assert [p["step"] for p in report["curve"]] == [0, 1, 2, 3]
    for point in report["curve"]:
        assert 0 <= point["min"] <= point["q1"] <= point["median"] <= point["q3"] <= point["max"] <= 1
        assert point["min"] <= point["mean"] <= point["max"]
        assert math.isclose(point["ci95"], 1.96 * point["std"] / math.sqrt(6))
    assert report["final"] == report["curve"][-1]
    best = omniglot_run / "checkpoints" / "best.pt"
    assert report["checkpoint"]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_eval_run_joins_the_training_group_with_its_numbers_in_the_summary(omniglot_run, omniglot_root, tmp_path):
    checkpoint = omniglot_run / "checkpoints" / "best.pt"
    cli(
        "eval",
        f"checkpoint={checkpoint}",
        f"data_root={omniglot_root}",
        "tasks=4",
        "steps=1",
        "queries=1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    train_run = wandb_run(omniglot_run)

    record, logged = run_record(wandb_run(tmp_path)), inspect(wandb_run(tmp_path))
    assert record["job_type"] == "eval"
    assert record["run_group"] == run_record(train_run)["run_group"] == "tiny-omniglot"
    assert logged["state"] == "finished"
    assert logged["config"]["train_run_id"] == inspect(train_run)["run_id"]
    assert logged["config"]["checkpoint"]["path"] == str(checkpoint)
    assert logged["config"]["checkpoint"]["sha256"] == report["checkpoint"]["sha256"]
    summary = logged["summary"]
    assert summary["eval/test/acc"] == report["final"]["mean"]
    assert summary["eval/test/acc_ci95"] == report["final"]["ci95"]
    assert summary["eval/test/acc_pre"] == report["curve"][0]["mean"]
    assert {"eval/test/acc_std", "eval/test/acc_min", "eval/test/acc_max"} <= set(summary)
    assert summary["eval/test/curve"]["_type"] == "image-file"  # curve.png


def test_an_eval_run_lines_up_with_its_training_run_and_declares_its_checkpoint_as_input(sinusoid_run, tmp_path):
    cli(
        "eval",
        f"run={sinusoid_run}",
        "split=val",
        "tasks=4",
        "steps=2",
        "plot_tasks=1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    train_dir, eval_dir = wandb_run(sinusoid_run), wandb_run(tmp_path)
    trained, evaluated = inspect(train_dir), inspect(eval_dir)

    config = evaluated["config"]  # grouped by the README's keys, eval runs and their training runs go together
    for key in ("ways", "shots", "queries", "seed", "name", "algorithm", "dataset", "model", "optimizer"):
        assert config[key] == trained["config"][key]
    assert config["hydra"]["choices"] == trained["config"]["hydra"]["choices"]
    assert (config["eval"]["split"], config["eval"]["steps"], config["train_run_id"]) == ("val", 2, trained["run_id"])
    assert trained["name"] in evaluated["name"] and "best@" in evaluated["name"]  # which model it evaluated

    [used] = model_versions(eval_dir, "best.pt")  # the input: the version its training run logged last for best.pt
    logged = model_versions(train_dir, "best.pt")[-1]
    assert used["use_after_commit"] and (used["name"], used["digest"]) == (logged["name"], logged["digest"])

    summary = evaluated["summary"]  # its own namespace: not the training run's val/mse
    assert "val/mse" not in summary and summary["eval/val/mse"] == report["final"]["mean"]
    assert summary["eval/val/curve"]["_type"] == summary["eval/val/fits"]["_type"] == "image-file"
    table = summary["eval/val/mse_adaptation_table"]  # the curve: a row per step, every statistic a column
    assert (table["_type"], table["nrows"], table["ncols"]) == ("table-file", 3, len(report["curve"][0]))


def test_eval_and_adapt_help_name_the_command_and_list_only_their_own_groups(tmp_path):
    for command in ("eval", "adapt"):
        shown = cli(command, "--help", cwd=tmp_path).stdout
        assert shown.startswith(f"maml-{command} is powered by Hydra.")
        assert "logger: wandb (default), none" in shown and "algorithm:" not in shown and "dataset:" not in shown


def test_sinusoid_eval_reports_mse_and_draws_the_adapted_fits(sinusoid_run, tmp_path):
    cli(
        "eval",
        f"run={sinusoid_run}",
        "split=val",
        "shots=5",
        "queries=4",
        "tasks=5",
        "steps=2",
        "plot_tasks=2",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )

    report = json.loads((tmp_path / "eval.json").read_text())
    assert (report["metric"], report["split"], report["shots"], report["queries"]) == ("mse", "val", 5, 4)
    assert "ways" not in report
    assert len(report["curve"]) == 3 and all(p["min"] >= 0 for p in report["curve"])
    assert (tmp_path / "fits.png").stat().st_size > 0
    assert not (tmp_path / "wandb").exists()
