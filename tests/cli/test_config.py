"""maml-train's configuration: shorthand keys, typed validation and friendly errors."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def maml_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "maml-train"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


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


@pytest.mark.parametrize(
    "override, message",
    [
        ("ways=five", "Value 'five' of type 'str' could not be converted to Integer"),
        ("wayz=5", "Key 'wayz' not in 'TrainConfig'"),
        ("dataset=omniglott", "Could not find 'dataset/omniglott'"),
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
