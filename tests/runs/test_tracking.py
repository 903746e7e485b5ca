"""W&B runs of training and evaluation jobs share their tags; names and groups a user can read and filter."""

from types import SimpleNamespace

import yaml

from maml_cli.cli.train import sweep_group
from maml_cli.runs.tracking import experiment_group, run_name, task_tag, training_task_tag
from tests.training.training_helpers import config


def test_the_task_tag_names_ways_and_shots_or_shots_alone():
    assert task_tag(5, 1) == "5w1s"
    assert task_tag(None, 10) == "10shot"  # regression: no ways
    assert training_task_tag(config("dataset=omniglot", "ways=20", "shots=5")) == "20w5s"
    assert training_task_tag(config("dataset=sinusoid", "shots=5")) == "5shot"  # ways=5 means nothing there


def test_a_run_is_named_by_its_overrides_less_the_unnamed_keys_and_their_sub_keys():
    overrides = ["ways=20", "seed=1", "logger.mode=offline", "launcher=joblib", "+model.hidden=[8,8]", "shots=5"]
    assert run_name(overrides, ["seed", "logger", "launcher"]) == "+model.hidden=[8,8],shots=5,ways=20"
    assert run_name(["seed=1", "loggers=2"], ["seed", "logger"]) == "loggers=2"  # a sub-key, not a prefix
    assert run_name(["seed=1"], ["seed"]) == "defaults"


def test_a_single_run_is_grouped_by_its_experiment_else_its_dataset_and_task():
    assert experiment_group(config("experiment=omniglot_5w1s")) == "omniglot_5w1s"
    assert experiment_group(config("dataset=omniglot", "ways=20", "shots=5")) == "omniglot-20w5s"
    assert experiment_group(config("dataset=sinusoid")) == "sinusoid-10shot"


def hydra(directory: str, *overrides: str, cwd: str = "/nonexistent"):
    """The parts of a job's HydraConfig that name its sweep's group."""
    return SimpleNamespace(
        sweep=SimpleNamespace(dir=directory),
        overrides=SimpleNamespace(hydra=list(overrides)),
        runtime=SimpleNamespace(cwd=cwd),
    )


def test_a_sweep_is_grouped_by_its_name_and_time_or_by_the_directory_it_was_given():
    timed = hydra("outputs/train-multirun/2025-01-02_03-04-05_3fa9c1")
    assert sweep_group(timed, {"sweep": "ways_shots"}, config()) == "ways_shots-2025-01-02_03-04-05_3fa9c1"
    assert sweep_group(timed, {}, config("experiment=omniglot_5w1s")) == "omniglot_5w1s-2025-01-02_03-04-05_3fa9c1"
    assert sweep_group(timed, {}, config()) == "multirun-2025-01-02_03-04-05_3fa9c1"
    assert sweep_group(hydra("/tmp/lr_study", "hydra.sweep.dir=/tmp/lr_study"), {"sweep": "optuna"}, config()) == (
        "lr_study"
    )


def test_a_sweep_over_experiments_is_one_group_not_one_per_experiment(tmp_path):
    sweep = tmp_path / "outputs" / "train-multirun" / "2025-01-02_03-04-05_3fa9c1"
    sweep.mkdir(parents=True)
    task = ["experiment=omniglot_5w1s,omniglot_5w1s_fomaml", "max_time=30m"]  # as Hydra saves the command line
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    job = hydra("outputs/train-multirun/2025-01-02_03-04-05_3fa9c1", cwd=str(tmp_path))

    for name in ("omniglot_5w1s", "omniglot_5w1s_fomaml"):
        assert sweep_group(job, {}, config(f"experiment={name}")) == "multirun-2025-01-02_03-04-05_3fa9c1"
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=0,1"]}}}))
    assert sweep_group(job, {}, config("experiment=omniglot_5w1s")) == "omniglot_5w1s-2025-01-02_03-04-05_3fa9c1"
