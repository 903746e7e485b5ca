"""``algorithm=reptile`` and ``algorithm=imaml`` train, resume and evaluate like the other algorithms (sinusoid)."""

import json

import pytest

from maml_cli.runs import load_checkpoint
from tests.evaluation.evaluation_helpers import cli
from tests.training.training_helpers import TINY, maml_train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algorithm", ["reptile", "imaml"])
def test_the_algorithm_trains_resumes_and_evaluates(algorithm, tmp_path):
    job, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    args = [f"algorithm={algorithm}", "algorithm.steps=3", *TINY, "logger=none", "checkpoint_every=2", "val_every=2"]
    first = maml_train(*args, "iterations=2", f"hydra.run.dir={job}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = maml_train(*args, "iterations=4", "resume=true", f"hydra.run.dir={job}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {last} at step 2" in (job / "train.log").read_text()
    checkpoint = load_checkpoint(last)
    assert checkpoint["step"] == 4 and checkpoint["config"]["algorithm"]["method"] == algorithm

    cli("eval", f"run={job}", "tasks=4", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [point["step"] for point in report["curve"]] == [0, 1, 2]  # TINY's algorithm.eval_steps=2
