"""Smoke tests: the literature's Conv4 (stride / max pooling, 28×28 / 84×84) and MLP in both engines."""

from __future__ import annotations

import pytest
import torch

from maml_cli.core import InnerLoopConfig, MetaLearner, TaskBatch
from maml_cli.models import MLP, Conv4
from tests.core.core_helpers import single_thread  # noqa: F401 (autouse fixture)


def _classification(tasks, ways, shape, shots=1, queries=2, seed=0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1).clone()  # noqa: E731
    return TaskBatch(
        torch.randn(tasks, ways * shots, *shape, generator=g),
        labels(shots),
        torch.randn(tasks, ways * queries, *shape, generator=g),
        labels(queries),
    )


def _regression(tasks=3, shots=5, seed=0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, 2 * shots, 1, generator=g) * 10 - 5
    amplitude, phase = torch.rand(tasks, 1, 1, generator=g) * 4.9 + 0.1, torch.rand(tasks, 1, 1, generator=g) * 3
    y = amplitude * torch.sin(x - phase)
    return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


CASES = {
    "conv4_stride_28": (
        lambda track: Conv4(3, 1, hidden=8, image_size=28, pooling="stride", track_running_stats=track),
        (1, 28, 28),
    ),
    "conv4_maxpool_84": (
        lambda track: Conv4(3, 3, hidden=8, image_size=84, pooling="max", track_running_stats=track),
        (3, 84, 84),
    ),
}


def _check(maml: MetaLearner, batch: TaskBatch, steps: int):
    stats = maml.meta_backward(batch)
    assert torch.isfinite(stats.loss) and stats.support_losses.shape == (steps,)
    for name, p in maml.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    curve = maml.evaluate(batch, steps=3)
    assert curve.losses.shape == (len(batch), 4) and torch.isfinite(curve.losses).all()
    params = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    out = maml.predict(params, batch.x_query[0], step=2)
    assert out.shape[0] == batch.x_query.shape[1] and torch.isfinite(out).all()
    return stats, curve


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("policy", ["transductive", "per_step"])
def test_conv4_meta_trains_evaluates_and_adapts_in_both_engines(case, engine, policy):
    torch.manual_seed(0)
    build, shape = CASES[case]
    model = build(policy == "per_step")
    maml = MetaLearner(model, inner=InnerLoopConfig(steps=1, engine=engine, batchnorm=policy, learn_lr=True))
    stats, curve = _check(maml, _classification(2, 3, shape), steps=1)
    assert curve.accuracies.shape == curve.losses.shape and stats.query_accuracy is not None


def test_conv4_engines_agree_in_float32():
    batch = _classification(3, 3, (1, 28, 28))
    grads = {}
    for engine in ("loop", "vmap"):
        torch.manual_seed(0)
        maml = MetaLearner(Conv4(3, hidden=8), inner=InnerLoopConfig(steps=2, engine=engine))
        maml.meta_backward(batch)
        grads[engine] = torch.cat([p.grad.flatten() for p in maml.parameters() if p.requires_grad])
    # two orders of rounding in float32 (ε ≈ 1.2e-7): measured ~5e-7 relative, 1e-4 leaves ample room for growth
    assert (grads["loop"] - grads["vmap"]).norm() < 1e-4 * grads["loop"].norm()


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_mlp_meta_learns_sinusoid_regression_and_anil_classification_in_both_engines(engine):
    torch.manual_seed(0)
    regression = MetaLearner(MLP(1, 1), loss="mse", inner=InnerLoopConfig(steps=2, lr=0.01, engine=engine))
    stats, curve = _check(regression, _regression(), steps=2)
    assert stats.query_accuracy is None and curve.accuracies is None

    anil = MetaLearner(MLP(16, 3, hidden=(8, 8)), inner=InnerLoopConfig(steps=1, adapt="head", engine=engine))
    _check(anil, _classification(2, 3, (4, 4)), steps=1)
