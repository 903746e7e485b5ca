"""Which validation score is the best: a non-finite one (a diverged model's NaN) is worse than any finite one."""
import json
import math

import pytest
import torch

from maml_cli.training import RunInfo, load_checkpoint, train
from maml_cli.training.metrics import is_better

from training_helpers import TINY, config

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("metric, value, best, better", [
    ("mse", 8.2, None, True),
    ("mse", NAN, None, True),  # the first score is the best so far, whatever it is
    ("mse", 8.2, 12.4, True),
    ("mse", 12.4, 8.2, False),
    ("acc", 0.9, 0.5, True),
    ("acc", 0.5, 0.9, False),
    ("mse", 12.4, NAN, True),
    ("acc", 0.1, NAN, True),
    ("mse", 12.4, INF, True),
    ("mse", NAN, 12.4, False),
    ("acc", NAN, 0.1, False),
    ("mse", INF, 12.4, False),
    ("mse", NAN, NAN, False),
])
def test_a_non_finite_score_is_worse_than_any_finite_one(metric, value, best, better):
    assert is_better(metric, value, best) is better


def test_a_nan_validation_is_replaced_as_best_by_the_first_finite_one(tmp_path, monkeypatch):
    scores = iter([NAN, 8.2, 12.4])  # validation MSE at steps 1, 2 and 3

    def fake_scores(learner, episodes, steps=None):
        return torch.full((len(episodes),), next(scores), dtype=torch.float64)

    monkeypatch.setattr("maml_cli.training.trainer.episode_scores", fake_scores)
    cfg = config(*TINY, "logger=none", "iterations=3", "val_every=1", "checkpoint_every=1", "test_tasks=0")
    assert train(cfg, RunInfo(output_dir=tmp_path)) == -8.2

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["best"] == {"metric": "val/mse", "value": 8.2, "step": 2}
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 2
