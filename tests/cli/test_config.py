"""maml-train's configuration: shorthand keys, typed validation and friendly errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import MissingConfigException

from maml_cli.cli import schema
from maml_cli.data import DATASETS
from maml_cli.errors import MamlError
from maml_cli.models import MODELS

BIN = Path(sys.executable).parent


def maml_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "maml-train"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def composed(command: str, *overrides: str):
    """The config that ``maml-<command> *overrides`` would run, validated in-process."""
    return schema.composed(command, overrides)


def test_shorthand_keys_reach_every_consumer(tmp_path):
    result = maml_train("--cfg", "job", "--resolve", "dataset=omniglot", "ways=20", "shots=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert (cfg["ways"], cfg["shots"]) == (20, 5)
    assert (cfg["dataset"]["ways"], cfg["dataset"]["shots"]) == (20, 5)


def test_dataset_selects_its_model_and_defaults(tmp_path):
    result = maml_train("--cfg", "job", "dataset=omniglot", cwd=tmp_path)
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["name"] == "conv4"
    assert cfg["algorithm"]["lr"] == 0.4
    default = yaml.safe_load(maml_train("--cfg", "job", cwd=tmp_path).stdout)
    assert default["dataset"]["name"] == "sinusoid" and default["model"]["name"] == "mlp"


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_registered_dataset_is_an_option_typed_by_its_config(name):
    cfg = composed("train", f"dataset={name}", "dataset.root=data")
    assert isinstance(cfg.dataset, DATASETS[name].config) and cfg.dataset.name == name


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_is_an_option_typed_by_its_config(name):
    cfg = composed("train", f"model={name}")
    assert type(cfg.model) is MODELS[name].config and cfg.model.name == name


@pytest.mark.parametrize(
    "override, message",
    [
        ("ways=five", "Value 'five' of type 'str' could not be converted to Integer"),
        ("wayz=5", "Key 'wayz' not in 'TrainConfig'"),
        ("dataset=omniglott", "Could not find 'dataset/omniglott'"),
        ("experiment=nonexistent", "Could not find 'experiment/nonexistent'"),
        ("+algorithm.lrr=0.5", "Error: +algorithm.lrr: no such setting; did you mean algorithm.lr?"),
        ("ways=1", "ways=1 is out of range: it must be >= 2"),
        ("shots=0", "shots=0 is out of range: it must be >= 1"),
        ("queries=0", "queries=0 is out of range: it must be >= 1"),
        ("algorithm.lr=0", "algorithm.lr=0.0 is out of range: it must be > 0.0"),
        ("optimizer.lr=-1", "optimizer.lr=-1.0 is out of range: it must be > 0.0"),
        ("algorithm.steps=-1", "algorithm.steps=-1 is out of range: it must be >= 0"),
        ("algorithm.engine=fast", "Invalid value 'fast', expected one of [auto, loop, threads, vmap]"),
        ("dataset.ways=10", "dataset.ways=10 contradicts ways=5: set ways=10 instead"),
        ("device=gpu", "device='gpu' is not valid"),
    ],
)
def test_bad_input_exits_with_a_clear_message_and_no_traceback(tmp_path, override, message):
    result = maml_train(override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output


CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_paper_preset_composes_into_a_valid_config_named_after_it(name):
    assert composed("train", f"experiment={name}").name == name


def test_the_algorithms_sweep_runs_each_algorithm_with_its_own_omniglot_5w1s_preset_for_30_minutes():
    sweep = yaml.safe_load((CONF / "sweep" / "algorithms.yaml").read_text())
    presets = sweep["hydra"]["sweeper"]["params"]["experiment"].split(",")
    configs = [composed("train", f"experiment={name}", "sweep=algorithms") for name in presets]
    methods = [(c.algorithm.method.value, c.algorithm.first_order) for c in configs]
    assert methods == [("maml", False), ("maml", True), ("reptile", False), ("imaml", False)]
    assert all((c.dataset.name, c.ways, c.shots, c.max_time) == ("omniglot", 5, 1, "30m") for c in configs)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*_cpu.yaml")))
def test_each_cpu_recipe_anneals_its_meta_lr_over_its_budget_30_minutes_at_5_way_60_at_20(name):
    recipe = composed("train", f"experiment={name}")
    assert (recipe.max_time, recipe.optimizer.span.value) == ("30m" if recipe.ways == 5 else "60m", "max_time")
    assert recipe.optimizer.schedule.value != "constant" and recipe.iterations >= 100_000  # the budget ends it


@pytest.mark.parametrize("search, row", [("cpu_recipe", "omniglot_5w1s"), ("cpu_recipe_20way", "omniglot_20w1s")])
def test_the_cpu_recipe_searches_anneal_over_each_trial_budget_and_skip_the_test(search, row):
    trial = composed("train", f"sweep={search}", f"experiment={row}", "max_time=5m")
    assert (trial.optimizer.schedule.value, trial.optimizer.span.value, trial.test_tasks) == ("cosine", "max_time", 0)
    with pytest.raises(MamlError, match="optimizer.span=max_time anneals .* set max_time"):
        composed("train", f"sweep={search}", f"experiment={row}")  # a trial needs its budget


@pytest.mark.parametrize(
    "override, options",
    [
        ("experiment=nonexistent", ["omniglot_5w1s", "miniimagenet_5w5s", "sinusoid_10shot"]),
        ("launcher=jobib", ["joblib", "slurm", "submitit_local"]),
        ("sweep=typo", ["optuna", "ways_shots"]),
    ],
)
def test_a_preset_that_does_not_exist_is_an_error_listing_the_presets(override, options):
    group, value = override.split("=")
    with pytest.raises(MissingConfigException) as error:
        composed("train", override)
    message = str(error.value)
    assert f"Could not find '{group}/{value}'" in message
    assert f"Available options in '{group}':" in message and all(f"\t{o}\n" in message for o in options)


def test_presets_of_the_user_search_path_are_selectable_and_listed(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nname: mine\nways: 3\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert (composed("train", searchpath, "experiment=mine").ways, composed("train", searchpath).ways) == (3, 5)
    with pytest.raises(MissingConfigException, match="Could not find 'experiment/min'") as error:
        composed("train", searchpath, "experiment=min")
    assert "\tmine\n" in str(error.value) and "\tomniglot_5w1s\n" in str(error.value)


@pytest.mark.parametrize(
    "command, overrides, message",
    [
        ("train", ["+algorithm.lrr=0.5"], "+algorithm.lrr: no such setting; did you mean algorithm.lr?"),
        ("train", ["+wayz=5"], "+wayz: no such setting; did you mean ways?"),
        ("train", ["+lr=0.1"], "+lr: no such setting; did you mean algorithm.lr or optimizer.lr?"),
        ("train", ["+algoritm.lr=0.1"], "+algoritm: no such setting; did you mean algorithm?"),
        ("train", ["+unknown=1"], "+unknown: no such setting; the settings are: ways, shots, queries, "),
        ("train", ["+dataset.colour=red"], "+dataset.colour: no such setting; the settings of dataset are: ways, "),
        ("eval", ["run=x", "+stepz=20"], "+stepz: no such setting; did you mean steps?"),
        ("adapt", ["run=x", "query=q", "+suport=s"], "+suport: no such setting; did you mean support?"),
    ],
)
def test_an_appended_key_that_no_schema_defines_is_an_error_naming_it(command, overrides, message):
    with pytest.raises(MamlError) as error:
        composed(command, *overrides)
    assert str(error.value).startswith(message)


def test_every_appended_key_that_no_schema_defines_is_named():
    with pytest.raises(MamlError) as error:
        composed("train", "+unknown=1", "+algorithm.lrr=0.5")
    assert [line.split(":")[0] for line in str(error.value).splitlines()] == ["+algorithm.lrr", "+unknown"]


def test_a_preset_that_does_not_exist_fails_a_multirun_before_any_job_runs(tmp_path):
    result = maml_train(
        "-m", "experiment=sinusoid_5shot,nonexistent", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Could not find 'experiment/nonexistent'" in result.stderr and "\tsinusoid_5shot\n" in result.stderr
    assert not (tmp_path / "sweep" / "0").exists()
