"""Which score is the best: a non-finite one (a diverged model's NaN) is worse than any finite one."""

import math

import pytest

from maml_cli.runs.metrics import is_better

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "metric, value, best, better",
    [
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
    ],
)
def test_a_non_finite_score_is_worse_than_any_finite_one(metric, value, best, better):
    assert is_better(metric, value, best) is better
