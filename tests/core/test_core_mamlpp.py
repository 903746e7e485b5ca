"""``algorithm=mamlpp`` does what the MAML++ authors' code (HowToTrainYourMAMLPytorch) does, point by point:
BatchNorm on batch statistics, per-step BatchNorm weights that the inner loop leaves alone, the multi-step
loss weights of ``get_per_step_loss_importance_vector``, second order from the start, LSLR starting at α;
and ``algorithm=metasgd`` draws its rates from U[0.005, 0.1] (Li et al. 2017)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from maml_cli.core import InnerLoopConfig, MetaLearner
from maml_cli.errors import MamlError
from maml_cli.training.resume import check_weights
from tests.core.core_helpers import (
    DTYPE,
    central_difference,
    classification_batch,
    conv_net,
    grads_by_name,
    learner,
    meta_gradient,
    mlp,
    relative_error,
    single_thread,  # noqa: F401 (autouse fixture)
)

PRESETS = Path(__file__).resolve().parents[2] / "conf" / "algorithm"
BN = ("bn.weight", "bn.bias")


def _preset(name: str, **overrides) -> InnerLoopConfig:
    """The ``algorithm=<name>`` preset as its settings (the group's defaults, then the preset, then ``overrides``)."""
    merged = OmegaConf.merge(OmegaConf.structured(InnerLoopConfig), OmegaConf.load(PRESETS / f"{name}.yaml"), overrides)
    return OmegaConf.to_object(merged)


def _mamlpp(steps: int = 2, track_running_stats: bool = False, **overrides) -> MetaLearner:
    """The mamlpp preset on the tiny conv net, ``steps`` inner steps, each step's BatchNorm set made distinct."""
    inner = _preset("mamlpp", steps=steps, eval_steps=steps, lr=0.5, **overrides)
    maml = MetaLearner(conv_net(track_running_stats=track_running_stats), inner=inner)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # γ, β of step 0 (the model's) and of each further step differ: indexing shows
        for p in (*maml.model.bn.parameters(), *maml.step_weights.parameters()):
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=DTYPE))
    return maml


def _batchnorm_set(maml: MetaLearner, step: int) -> dict:
    """γ and β of inner step ``step``: the model's own at step 0, then the learner's sets."""
    if step == 0:
        return {n: maml.model.get_parameter(n) for n in BN}
    return {n: maml.step_weights.sets[step - 1][n.replace(".", "__")] for n in BN}


def _query_loss_by_hand(maml: MetaLearner, task, updates: int, query_set) -> torch.Tensor:
    """The query loss after ``updates`` plain inner steps with α = ``maml.inner.lr``, written out: the support
    pass of step s uses the BatchNorm set of step s, the query pass the set ``query_set(updates)``; batch
    statistics throughout (train mode)."""
    x_s, y_s, x_q, y_q = task
    k = maml.inner.steps
    params = dict(maml.model.named_parameters())
    adapted = [n for n in params if n not in BN]
    for s in range(updates):
        out = functional_call(maml.model, {**params, **_batchnorm_set(maml, min(s, k - 1))}, (x_s,))
        grads = torch.autograd.grad(F.cross_entropy(out, y_s), [params[n] for n in adapted], create_graph=True)
        params = {**params, **{n: params[n] - maml.inner.lr * g for n, g in zip(adapted, grads)}}
    out = functional_call(maml.model, {**params, **_batchnorm_set(maml, query_set(updates))}, (x_q,))
    return F.cross_entropy(out, y_q)


def _official_query_set(k: int):
    return lambda updates: min(max(updates - 1, 0), k - 1)  # the step whose update the query scores


def _task(batch, i):
    return batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i]


def test_mamlpp_preset_is_the_official_configuration():
    inner = _preset("mamlpp")
    # maml++ experiment_config/*.json: 5 steps in training and evaluation, LSLR, MSL over 10 epochs of 500
    # iterations, second_order with first_order_to_second_order_epoch -1, per_step_bn_statistics with
    # enable_inner_loop_optimizable_bn_params false, BatchNorm always on batch statistics (training=True).
    assert (inner.steps, inner.eval_steps) == (5, 5)
    assert inner.learn_lr and inner.lr_per_step and inner.lr_granularity.value == "per_layer"
    assert inner.lr_init_range is None  # LSLR starts at α (their task_learning_rate)
    assert (inner.multi_step_loss_iterations, inner.iterations_per_epoch) == (10 * 500, 500)
    assert not inner.first_order and inner.first_order_iterations == 0
    assert inner.batchnorm.value == "transductive" and inner.batchnorm_weights.value == "per_step"


def test_lslr_rates_start_at_the_inner_learning_rate_one_per_layer_and_step():
    maml = MetaLearner(conv_net(), inner=_preset("mamlpp", lr=0.1))
    assert len(maml.inner_lr.rates) == 5
    assert all(r.item() == 0.1 and r.requires_grad for r in maml.inner_lr.parameters())  # exact: filled in


def test_mamlpp_keeps_a_batchnorm_set_per_step_the_models_own_serving_step_0_and_no_statistics():
    maml = _mamlpp(steps=3)
    assert len(maml.step_weights.sets) == 2  # k sets in all (the MAML++ code's [k, C] weight and bias)
    assert set(maml.step_weights.sets[0].keys()) == {"bn__weight", "bn__bias"}
    assert all(p.requires_grad for p in maml.step_weights.parameters())  # meta-learned
    assert len(maml.step_buffers) == 0  # the code's per-step running statistics are never read: none kept
    assert len(MetaLearner(conv_net(), inner=_preset("mamlpp", steps=1)).step_weights.sets) == 0


@pytest.mark.parametrize("first_order", [False, True])
def test_each_pass_uses_the_batchnorm_set_of_its_step_and_the_query_that_of_the_last_update(first_order):
    """Support pass of step s: set s; query after s updates: set s−1 (the code's ``num_step``), so the final
    query uses the last set; evaluation past the trained steps reuses it."""
    maml = _mamlpp(steps=2, first_order=first_order)
    batch = classification_batch(tasks=2)
    official = _official_query_set(2)
    curve = maml.evaluate(batch, steps=3).losses
    for i in range(2):
        for updates in range(4):
            expected = _query_loss_by_hand(maml, _task(batch, i), updates, official)
            torch.testing.assert_close(curve[i, updates], expected.detach(), rtol=1e-12, atol=0)
    stats = maml.meta_backward(batch, iteration=5000)  # past the multi-step loss: the final query alone
    by_hand = torch.stack([_query_loss_by_hand(maml, _task(batch, i), 2, official) for i in range(2)]).mean()
    torch.testing.assert_close(stats.loss, by_hand.detach(), rtol=1e-12, atol=0)
    # the test can tell: the query with the set of its own number of updates (k+1 sets) scores differently,
    # a million times beyond the tolerance above
    own = _query_loss_by_hand(maml, _task(batch, 0), 1, lambda updates: min(updates, 1))
    assert abs(own.item() - curve[0, 1].item()) > 1e-6 * curve[0, 1].item()


def test_the_inner_loop_leaves_batchnorm_weights_alone_and_every_steps_set_is_meta_learned():
    maml = _mamlpp(steps=2)
    batch = classification_batch(tasks=2)
    assert not set(BN) & set(maml.adapted_names)
    assert "bn__weight" not in maml.inner_lr.rates[0]  # no inner rate for what is not adapted
    adapted = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    for name, p in maml.model.named_parameters():
        assert torch.equal(adapted[name], p.detach()) == (name in BN), name  # exact: passed through

    # second order: set 0 through the support pass of step 0, set 1 through step 1's and the query
    _, analytic, after = meta_gradient(maml, batch, iteration=5000)
    grads = grads_by_name(after)
    for name in ("model.bn.weight", "model.bn.bias", "step_weights.sets.0.bn__weight", "step_weights.sets.0.bn__bias"):
        assert grads[name].abs().sum() > 0, name
    direction = torch.randn(analytic.shape, generator=torch.Generator().manual_seed(7), dtype=DTYPE)
    fd = central_difference(maml, batch, direction, iteration=5000)
    assert relative_error(fd, analytic @ direction) < 1e-6  # O(ε²) truncation, ε = 1e-5, with margin


def test_batchnorm_weights_meta_learned_keeps_one_set_out_of_the_inner_loop():
    maml = learner(conv_net(), steps=2, batchnorm_weights="meta_learned")
    assert not set(BN) & set(maml.adapted_names) and len(maml.step_weights.sets) == 0
    _, _, after = meta_gradient(maml, classification_batch())
    assert after.model.bn.weight.grad.abs().sum() > 0
    assert set(BN) <= set(learner(conv_net(), steps=2).adapted_names)  # MAML: adapted like every weight
    for setting in ("meta_learned", "per_step"):
        with pytest.raises(MamlError, match="BatchNorm layers"):
            learner(mlp(), batchnorm_weights=setting)


@pytest.mark.parametrize("engine", ["vmap", "threads"])
@pytest.mark.parametrize("iteration", [0, 700, 5000])  # multi-step loss epochs 0 and 1, then the final step only
def test_engines_agree_on_mamlpp_with_per_step_weights(engine, iteration):
    batch = classification_batch(tasks=4)
    results = {}
    for name in ("loop", engine):
        maml = _mamlpp(steps=3, engine=name, track_running_stats=True, batchnorm="per_step")  # + statistics
        threads = torch.get_num_threads()
        torch.set_num_threads(3 if name == "threads" else 1)  # 3 workers for 4 tasks: uneven slices
        try:
            stats = maml.meta_backward(batch, iteration)
        finally:
            torch.set_num_threads(threads)
        results[name] = stats, grads_by_name(maml), maml.state_dict()
    (loop_stats, loop_grads, loop_state), (stats, grads, state) = results["loop"], results[engine]
    torch.testing.assert_close(stats.loss, loop_stats.loss, rtol=1e-10, atol=1e-12)
    assert grads.keys() == loop_grads.keys() and any(n.startswith("step_weights.") for n in grads)
    scale = torch.cat([g.flatten() for g in loop_grads.values()]).norm()
    for name in grads:  # two orders of float64 rounding (see core_helpers.ROUNDING), relative to the whole
        assert (grads[name] - loop_grads[name]).norm() < 1e-10 * scale, name
    for name in state:
        torch.testing.assert_close(state[name], loop_state[name], rtol=1e-10, atol=1e-12, msg=name)


def test_mamlpp_never_normalises_with_running_statistics():
    """The MAML++ code normalises with batch statistics always (F.batch_norm(training=True)): the results do not
    depend on whatever running statistics the model holds, and evaluation leaves them untouched."""
    batch = classification_batch(tasks=2)
    tracking = _mamlpp(steps=2, track_running_stats=True)
    plain = _mamlpp(steps=2)
    with torch.no_grad():
        tracking.model.bn.running_mean.fill_(3.0)
        tracking.model.bn.running_var.fill_(0.01)
    before = {k: v.clone() for k, v in tracking.state_dict().items()}
    curve = tracking.evaluate(batch, steps=3).losses
    torch.testing.assert_close(curve, plain.evaluate(batch, steps=3).losses, rtol=1e-12, atol=0)
    params = tracking.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    torch.testing.assert_close(
        tracking.predict(params, batch.x_query[0], step=2),
        plain.predict(plain.adapt(batch.x_support[0], batch.y_support[0], steps=2), batch.x_query[0], step=2),
        rtol=1e-12,
        atol=0,
    )
    _, tracked_grad, _ = meta_gradient(tracking, batch)
    _, plain_grad, _ = meta_gradient(plain, batch)
    assert relative_error(tracked_grad, plain_grad) < 1e-12
    after = tracking.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # exact: evaluation writes nothing


def _official_weights(k: int, epochs: Fraction, epoch: int) -> list[float]:
    """get_per_step_loss_importance_vector in exact arithmetic: 1/k each, the non-final ones decaying by
    1/(k·epochs) per epoch to 0.03/k at least, the final one rising by (k−1)/(k·epochs) to 1 − (k−1)·0.03/k at most."""
    decay, floor = 1 / (k * epochs), Fraction(3, 100) / k
    early = max(Fraction(1, k) - epoch * decay, floor)
    final = min(Fraction(1, k) + epoch * (k - 1) * decay, 1 - (k - 1) * floor)
    return [float(early)] * (k - 1) + [float(final)]


@pytest.mark.parametrize(
    ("iteration", "epoch"),
    [(0, 0), (499, 0), (500, 1), (2600, 5), (4999, 9)],
)
def test_multi_step_loss_weights_are_the_official_ones_of_each_epoch(iteration, epoch):
    maml = MetaLearner(conv_net(), inner=_preset("mamlpp"))  # k = 5 steps, 10 epochs of 500 iterations
    expected = _official_weights(5, Fraction(10), epoch)
    # a few roundings of numbers ≤ 1 in float64: within 4 ulps of 1 (~9e-16)
    assert maml.multi_step_weights(iteration).tolist() == pytest.approx(expected, abs=1e-15)
    assert maml.multi_step_weights(iteration).sum().item() == pytest.approx(1.0, abs=1e-15)


def test_multi_step_loss_weights_are_clamped_and_end_with_the_final_step_alone():
    maml = learner(mlp(), steps=5, multi_step_loss_iterations=1000, iterations_per_epoch=1)
    assert maml.multi_step_weights(960).tolist() == pytest.approx(_official_weights(5, Fraction(1000), 960), abs=1e-15)
    clamped = maml.multi_step_weights(980).tolist()  # past 0.97 of the span: floor and ceiling
    assert clamped == pytest.approx([0.006] * 4 + [1 - 4 * 0.006], abs=1e-15)
    assert clamped[:-1] == [0.03 / 5] * 4  # exact: the floor itself
    assert maml.multi_step_weights(999) is not None and maml.multi_step_weights(1000) is None


def test_mamlpp_is_second_order_from_the_first_iteration():
    batch = classification_batch(tasks=2)
    _, second, _ = meta_gradient(_mamlpp(steps=2), batch, iteration=0)
    _, first, _ = meta_gradient(_mamlpp(steps=2, first_order=True), batch, iteration=0)
    assert relative_error(second, first) > 1e-3


def test_metasgd_rates_start_uniform_in_the_papers_range():
    torch.manual_seed(0)
    maml = MetaLearner(conv_net(), inner=_preset("metasgd"))
    rates = torch.cat([r.flatten() for r in maml.inner_lr.parameters()])
    assert rates.numel() == sum(p.numel() for p in maml.model.parameters())  # one per weight
    assert rates.min() >= 0.005 and rates.max() <= 0.1
    # 48 draws from U[0.005, 0.1] (seeded) spread over the range: each bound below fails with p < 1e-3
    assert rates.min() < 0.02 and rates.max() > 0.085 and 0.04 < rates.mean() < 0.065
    with pytest.raises(MamlError, match="learn_lr"):
        InnerLoopConfig(lr_init_range=[0.005, 0.1])
    for bad in ([0.1], [0.0, 0.1], [0.1, 0.005]):
        with pytest.raises(MamlError, match="lr_init_range"):
            InnerLoopConfig(learn_lr=True, lr_init_range=bad)


def test_the_weights_of_old_per_step_runs_keep_their_layout_and_do_not_fit_the_new_one():
    """Runs trained before (batchnorm=per_step, no batchnorm_weights key) are built with the old layout and
    load; the new mamlpp layout, asked to take their weights, says what does not fit."""
    old_mamlpp = dict(learn_lr=True, lr_granularity="per_layer", lr_per_step=True, multi_step_loss_iterations=10000)
    old = learner(conv_net(track_running_stats=True), steps=5, batchnorm="per_step", **old_mamlpp)
    assert {k.split(".")[0] for k in old.state_dict()} == {"model", "inner_lr", "step_buffers"}
    assert len(old.step_buffers) == 6 and len(old.step_weights.sets) == 0
    new = MetaLearner(conv_net(), inner=_preset("mamlpp"))
    checkpoint = {"learner": old.state_dict(), "config": {"model": {"name": "tiny"}}}
    with pytest.raises(MamlError, match=r"step_weights\.sets\.0\.bn__weight is missing"):
        check_weights(Path("old.pt"), checkpoint, new)
