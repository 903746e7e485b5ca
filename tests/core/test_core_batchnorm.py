"""BatchNorm statistics: ``per_step`` (running statistics per inner step, used at evaluation) and ``transductive``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from maml_cli.core import TaskBatch
from maml_cli.errors import MamlError
from tests.core.core_helpers import classification_batch, conv_net, learner, meta_gradient, single_thread  # noqa: F401 (autouse fixture)


def _per_step(steps=2, engine="loop", **kwargs):
    return learner(conv_net(track_running_stats=True), steps=steps, batchnorm="per_step", engine=engine, **kwargs)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same_state(before, after):
    """Bitwise equal: the state these tests check is never written to."""
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_per_step_policy_requires_batchnorm_with_running_statistics():
    with pytest.raises(MamlError, match="track_running_stats"):
        learner(conv_net(track_running_stats=False), batchnorm="per_step")


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_per_step_running_statistics_are_one_set_per_inner_step_averaged_over_tasks(engine):
    maml = _per_step(steps=2, engine=engine)
    batch = classification_batch(tasks=3)
    assert len(maml.step_buffers) == 3  # before step 0, 1 and after the last step (query)
    model_buffers = _state(maml.model)
    maml.meta_backward(batch)

    # Step 0 saw only the support sets at θ₀: running = 0.9·init + 0.1·(batch statistic), averaged over tasks.
    conv = maml.model.conv
    with torch.no_grad():
        h = torch.stack([conv(batch.x_support[i]) for i in range(len(batch))])  # [tasks, n, C, H, W]
    mean = h.mean((1, 3, 4))
    var = h.transpose(1, 2).flatten(2).var(-1, unbiased=True)
    step0 = maml.step_buffers[0]
    torch.testing.assert_close(step0.get("bn.running_mean"), 0.1 * mean.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(step0.get("bn.running_var"), 0.9 + 0.1 * var.mean(0), rtol=1e-12, atol=1e-14)
    for s in range(3):
        assert maml.step_buffers[s].get("bn.num_batches_tracked").item() == 1
    means = [maml.step_buffers[s].get("bn.running_mean") for s in range(3)]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    _assert_same_state(model_buffers, _state(maml.model))  # the model's own buffers are not the per-step ones


def test_per_step_running_statistics_are_used_at_evaluation():
    maml = _per_step(steps=1)
    batch = classification_batch(tasks=2)
    maml.meta_backward(batch)
    before = maml.evaluate(batch, steps=2).losses
    with torch.no_grad():
        for buffers in maml.step_buffers:
            buffers.get("bn.running_var").mul_(4.0)
    after = maml.evaluate(batch, steps=2).losses
    assert not torch.allclose(before, after)
    transductive = learner(copy.deepcopy(maml.model), steps=1).evaluate(batch, steps=2).losses
    assert not torch.allclose(after, transductive)


def _with_query(batch: TaskBatch, x_query, y_query) -> TaskBatch:
    return TaskBatch(batch.x_support, batch.y_support, x_query, y_query)


def test_per_step_evaluation_scores_each_query_image_independently_of_the_others():
    maml = _per_step(steps=1)
    batch = classification_batch(tasks=2, queries=2)
    maml.meta_backward(batch)
    params = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    alone = maml.predict(params, batch.x_query[0][:1])
    with_others = maml.predict(params, batch.x_query[0])
    torch.testing.assert_close(with_others[:1], alone, rtol=1e-12, atol=1e-14)

    # A task's query loss is the mean of its images' losses, each scored as a one-image query set.
    whole = maml.evaluate(batch, steps=2).losses
    singles = torch.stack(
        [
            maml.evaluate(_with_query(batch, batch.x_query[:, j : j + 1], batch.y_query[:, j : j + 1]), 2).losses
            for j in range(batch.x_query.shape[1])
        ]
    )
    torch.testing.assert_close(whole, singles.mean(0), rtol=1e-12, atol=1e-14)

    # Transductive BatchNorm, by contrast, normalises with the query set's own statistics.
    transductive = learner(conv_net(), steps=1)
    params = transductive.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    assert not torch.allclose(
        transductive.predict(params, batch.x_query[0])[:1], transductive.predict(params, batch.x_query[0][:2])
    )


@pytest.mark.parametrize("policy", ["per_step", "transductive"])
def test_evaluation_adapt_and_predict_never_change_parameters_or_buffers(policy):
    maml = learner(conv_net(track_running_stats=True), steps=2, batchnorm=policy, learn_lr=True)
    batch = classification_batch(tasks=3)
    maml.meta_backward(batch)
    maml.zero_grad(set_to_none=True)
    before = _state(maml)
    maml.evaluate(batch, steps=3)
    params = maml.adapt(batch.x_support[0], batch.y_support[0], steps=3)
    maml.predict(params, batch.x_query[0])
    _assert_same_state(before, _state(maml))
    assert all(p.grad is None for p in maml.parameters())
    assert maml.model.training  # back in training mode for meta-training


def test_transductive_meta_training_leaves_the_models_running_statistics_untouched():
    maml = learner(conv_net(track_running_stats=True), steps=2)
    before = _state(maml.model)
    for engine in ("loop", "vmap"):
        maml.inner.engine = type(maml.inner.engine)(engine)
        maml.meta_backward(classification_batch(tasks=3))
    after = _state(maml.model)
    for key in before:
        if "bn." in key:
            assert torch.equal(before[key], after[key]), key  # exact: never written to


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_transductive_task_results_do_not_depend_on_the_other_tasks_in_the_batch(engine):
    """No buffer leaks between tasks: a task alone gives the same meta-loss, meta-gradient and
    adaptation curve as its part in a meta-batch (model with running-statistics buffers)."""
    maml = learner(conv_net(track_running_stats=True), steps=2, engine=engine)
    batch = classification_batch(tasks=3)
    stats, whole, _ = meta_gradient(maml, batch)
    singles = [meta_gradient(maml, batch[i]) for i in range(3)]
    torch.testing.assert_close(stats.loss, torch.stack([s.loss for s, _, _ in singles]).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(whole, torch.stack([g for _, g, _ in singles]).mean(0), rtol=1e-10, atol=1e-13)

    curve = maml.evaluate(batch, steps=3).losses
    for i in range(3):
        torch.testing.assert_close(curve[i], maml.evaluate(batch[i], steps=3).losses[0], rtol=1e-12, atol=1e-14)
    reversed_batch = TaskBatch.cat([batch[i] for i in (2, 1, 0)])
    torch.testing.assert_close(maml.evaluate(reversed_batch, steps=3).losses, curve.flip(0), rtol=1e-12, atol=1e-14)
    # and the transductive curve is what the plain model gives with batch statistics
    params = maml.adapt(batch.x_support[1], batch.y_support[1], steps=3)
    loss = F.cross_entropy(maml.predict(params, batch.x_query[1]), batch.y_query[1])
    torch.testing.assert_close(curve[1, -1], loss, rtol=1e-10, atol=1e-12)
