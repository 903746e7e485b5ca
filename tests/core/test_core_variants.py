"""Meta-SGD, ANIL, MAML++ (LSLR, multi-step loss), derivative-order annealing and frozen parameters."""

from __future__ import annotations

import pytest
import torch

from maml_cli.core import OptimizerConfig, build_optimizer
from maml_cli.errors import MamlError
from tests.core.core_helpers import (
    DTYPE,
    EPS,
    ROUNDING,
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


def test_meta_sgd_learns_one_rate_per_weight_and_every_rate_gets_a_meta_gradient():
    maml = learner(mlp(), steps=2, learn_lr=True, lr_granularity="per_element")
    rates = maml.inner_lr.rates[0]
    for name, p in maml.model.named_parameters():
        assert rates[name.replace(".", "__")].shape == p.shape
    maml.meta_backward(classification_batch(shape=(4,)))
    for name, rate in maml.inner_lr.named_parameters():
        assert rate.grad is not None and rate.grad.abs().sum() > 0, name
    before = [r.detach().clone() for r in maml.inner_lr.parameters()]
    build_optimizer(maml.parameters(), OptimizerConfig(name="sgd", lr=0.1)).step()
    assert all(not torch.equal(b, r) for b, r in zip(before, maml.inner_lr.parameters()))


def test_fixed_inner_rates_are_not_meta_parameters():
    maml = learner(mlp(), steps=1)
    assert not any(p.requires_grad for p in maml.inner_lr.parameters())
    maml.meta_backward(classification_batch(shape=(4,)))
    assert all(p.grad is None for p in maml.inner_lr.parameters())


def test_lslr_has_one_learned_rate_per_layer_and_per_step_and_each_step_uses_its_own():
    maml = learner(conv_net(), steps=3, learn_lr=True, lr_per_step=True, lr_granularity="per_layer")
    assert len(maml.inner_lr.rates) == 3
    assert all(r.shape == () for r in maml.inner_lr.parameters())
    maml.meta_backward(classification_batch())
    step_grads = [torch.stack([r.grad for r in maml.inner_lr.rates[s].values()]) for s in range(3)]
    assert all(g.abs().sum() > 0 for g in step_grads)
    assert not torch.allclose(step_grads[0], step_grads[2])


def test_inner_lr_gives_the_learned_rate_of_each_step_and_parameter_and_reuses_the_last_set_past_it():
    maml = learner(conv_net(), steps=2, lr=0.5, learn_lr=True, lr_per_step=True, lr_granularity="per_layer")
    with torch.no_grad():
        maml.inner_lr.rates[1]["head__bias"].fill_(0.25)
    assert maml.inner_lr(0, "head.bias").item() == 0.5 and maml.inner_lr(1, "conv.weight").item() == 0.5
    assert maml.inner_lr(1, "head.bias") is maml.inner_lr.rates[1]["head__bias"]
    assert maml.inner_lr(5, "head.bias").item() == 0.25  # evaluation with more steps than training
    assert maml.inner.lr == 0.5  # the configuration keeps the initial value
    scalar = learner(mlp(), steps=1, learn_lr=True)
    assert all(scalar.inner_lr(0, n) is scalar.inner_lr.rates[0] for n in scalar.adapted_names)


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_anil_adapts_only_the_head_but_meta_learns_the_body(engine):
    maml = learner(conv_net(), steps=2, adapt="head", engine=engine)
    batch = classification_batch()
    assert set(maml.adapted_names) == {"head.weight", "head.bias"}
    adapted = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    for name, p in maml.model.named_parameters():
        changed = not torch.equal(adapted[name], p.detach())  # the body is passed through; the head moves by α∇
        assert changed == name.startswith("head."), name

    _, analytic, after = meta_gradient(maml, batch)
    grads = grads_by_name(after.model)
    assert grads.keys() == {n for n, _ in maml.model.named_parameters()}
    assert grads["conv.weight"].abs().sum() > 0 and grads["bn.weight"].abs().sum() > 0
    direction = torch.randn(analytic.shape, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    assert relative_error(central_difference(maml, batch, direction), analytic @ direction) < 1e-6


def test_anil_head_can_be_named_and_a_model_without_trainable_head_is_rejected():
    from maml_cli.core import InnerLoopConfig, MetaLearner

    maml = MetaLearner(mlp(), inner=InnerLoopConfig(adapt="head"), head="body")
    assert all(n.startswith("body.") for n in maml.adapted_names)
    net = mlp()
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(MamlError):
        learner(net)


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_frozen_parameters_are_neither_adapted_nor_meta_trained_and_cause_no_errors(engine):
    net = conv_net()
    net.conv.weight.requires_grad_(False)
    frozen = net.conv.weight.detach().clone()
    maml = learner(net, steps=2, engine=engine, learn_lr=True, lr_granularity="per_layer")
    batch = classification_batch()
    assert "conv.weight" not in maml.adapted_names
    assert "conv__weight" not in maml.inner_lr.rates[0]

    adapted = maml.adapt(batch.x_support[0], batch.y_support[0], steps=2)
    assert torch.equal(adapted["conv.weight"], frozen)  # exact: passed through, never updated
    moved = {n: (adapted[n] - net.get_parameter(n)).abs().max().item() for n in maml.adapted_names}
    # conv.bias's inner gradient, a sum over the support set's pixels, cancels exactly (BatchNorm with batch
    # statistics follows it): rounding alone, ≲ ε per pixel relative to the other gradients, can move it.
    assert moved.pop("conv.bias") <= batch.x_support[0].numel() * EPS * max(moved.values())
    assert all(m > 0 for m in moved.values())  # every other adapted parameter is adapted

    _, analytic, after = meta_gradient(maml, batch)  # gradient over the trainable parameters only
    assert after.model.conv.weight.grad is None
    assert after.model.conv.bias.grad is not None
    direction = torch.randn(analytic.shape, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    assert relative_error(central_difference(maml, batch, direction), analytic @ direction) < 1e-6
    maml.evaluate(batch, steps=2)
    optimizer = build_optimizer(after.parameters(), OptimizerConfig())
    assert all(p is not after.model.conv.weight for g in optimizer.param_groups for p in g["params"])
    optimizer.step()
    assert torch.equal(after.model.conv.weight, frozen)


def test_multi_step_loss_weights_start_uniform_change_per_epoch_sum_to_one_and_anneal_to_the_final_step():
    maml = learner(mlp(), steps=4, multi_step_loss_iterations=100, iterations_per_epoch=10)
    uniform = maml.multi_step_weights(0)
    torch.testing.assert_close(uniform, torch.full((4,), 0.25, dtype=uniform.dtype))
    assert torch.equal(maml.multi_step_weights(9), uniform)  # exact: one vector per epoch
    assert not torch.equal(maml.multi_step_weights(10), uniform)
    previous_final = 0.0
    for iteration in (0, 10, 50, 99):
        w = maml.multi_step_weights(iteration)
        assert w.shape == (4,)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert (w[:-1] >= 0.03 / 4 - 1e-9).all() and torch.all(w[:-1] == w[0])  # exact: one value, filled in
        assert w[-1].item() >= previous_final
        previous_final = w[-1].item()
    assert maml.multi_step_weights(99)[-1].item() > 0.9  # epoch 9 of 10: 1/4 + 9·3/40 = 0.925
    assert maml.multi_step_weights(100) is None and maml.multi_step_weights(10_000) is None  # final step only
    assert learner(mlp(), steps=1, multi_step_loss_iterations=100).multi_step_weights(0) is None
    assert learner(mlp(), steps=4).multi_step_weights(0) is None


def test_multi_step_loss_is_the_weighted_query_loss_after_each_step_then_the_final_one():
    batch = classification_batch(shape=(4,))
    maml = learner(mlp(), steps=3, multi_step_loss_iterations=10, eval_steps=3)
    curve = maml.evaluate(batch, steps=3).losses  # [tasks, 4]: query loss after 0..3 steps
    early = maml.meta_backward(batch, iteration=0)
    torch.testing.assert_close(early.loss, curve[:, 1:].mean(1).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(early.query_loss, curve[:, -1].mean(), rtol=1e-12, atol=0)
    late = maml.meta_backward(batch, iteration=10)
    torch.testing.assert_close(late.loss, curve[:, -1].mean(), rtol=1e-12, atol=0)
    _, plain, _ = meta_gradient(learner(mlp(), steps=3), batch)
    _, annealed, _ = meta_gradient(maml, batch, iteration=10)
    assert relative_error(annealed, plain) <= ROUNDING
    # the weighted gradient is the gradient of the weighted loss
    direction = torch.randn(plain.shape, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    _, weighted, _ = meta_gradient(maml, batch, iteration=3)
    assert relative_error(central_difference(maml, batch, direction, iteration=3), weighted @ direction) < 1e-6


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_derivative_order_annealing_is_first_order_before_n_iterations_then_second_order(engine):
    batch = classification_batch()
    annealed = learner(conv_net(), steps=2, first_order_iterations=5, engine=engine)
    _, first, _ = meta_gradient(learner(conv_net(), steps=2, first_order=True, engine=engine), batch)
    _, second, _ = meta_gradient(learner(conv_net(), steps=2, engine=engine), batch)
    assert relative_error(first, second) > 1e-3
    for iteration in (0, 4):
        assert relative_error(meta_gradient(annealed, batch, iteration)[1], first) <= ROUNDING
    for iteration in (5, 100):
        assert relative_error(meta_gradient(annealed, batch, iteration)[1], second) <= ROUNDING


def test_inner_loop_config_rejects_out_of_range_values():
    from maml_cli.core import InnerLoopConfig

    for bad in (dict(lr=0.0), dict(steps=-1), dict(eval_chunk=0), dict(lr_granularity="per_neuron")):
        with pytest.raises(MamlError):
            InnerLoopConfig(**bad)
