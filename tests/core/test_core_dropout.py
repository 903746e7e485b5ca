"""Dropout regularises meta-training only: ``evaluate``, ``adapt`` and ``predict`` turn it off (so that they are
deterministic) while BatchNorm keeps its policy, and they leave every module's mode as they found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from tests.core.core_helpers import DTYPE, classification_batch, learner, single_thread  # noqa: F401 (autouse fixture)


def _net(dropout: bool) -> nn.Sequential:
    """conv → BatchNorm (with running statistics) → tanh → dropout (or nothing) → linear, 1×6×6 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Dropout(0.5) if dropout else nn.Identity(),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 3),
    ).to(DTYPE)


def _evaluation(maml, batch) -> list[torch.Tensor]:
    curve = maml.evaluate(batch, steps=2)
    params = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    return [curve.losses, curve.accuracies, maml.predict(params, batch.x_query[0], step=2)]


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("policy", ["transductive", "per_step"])
def test_evaluation_adaptation_and_prediction_are_deterministic(policy, engine):
    maml = learner(_net(dropout=True), steps=1, batchnorm=policy, engine=engine)
    batch = classification_batch()
    # Exact by construction: the same kernels on the same inputs in one thread, and no random draw.
    for a, b in zip(_evaluation(maml, batch), _evaluation(maml, batch)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("policy", ["transductive", "per_step"])
def test_predictions_are_the_network_without_dropout_with_batchnorm_per_its_policy(policy):
    maml = learner(_net(dropout=True), steps=1, batchnorm=policy)
    batch = classification_batch()
    params = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    # BatchNorm: the query set's statistics (train mode), or the running ones (eval mode; the initial ones here)
    without = _net(dropout=False).train(policy == "transductive")
    expected = functional_call(without, params, (batch.x_query[0],))
    torch.testing.assert_close(maml.predict(params, batch.x_query[0], step=2), expected, rtol=1e-12, atol=1e-14)


def test_meta_training_uses_dropout():
    torch.manual_seed(0)
    batch = classification_batch()
    with_dropout, without = learner(_net(dropout=True), steps=1), learner(_net(dropout=False), steps=1)
    assert with_dropout.meta_backward(batch).loss != with_dropout.meta_backward(batch).loss  # new masks each time
    assert without.meta_backward(batch).loss == without.meta_backward(batch).loss  # exact: same computation


@pytest.mark.parametrize("training", [True, False])
def test_evaluation_adaptation_and_prediction_leave_every_modules_mode_as_they_found_it(training):
    maml = learner(_net(dropout=True), steps=1)
    maml.model.train(training)
    maml.model[1].train(not training)  # a mixed state is kept too
    modes = [m.training for m in maml.model.modules()]
    _evaluation(maml, classification_batch())
    assert [m.training for m in maml.model.modules()] == modes
