"""The meta-gradient is the true gradient of the MAML meta-objective.

Meta-objective: L(θ) = mean over tasks of L_query(θ'ᵢ), θ'ᵢ = θ after k steps θ ← θ − α ∇L_support.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from tests.core.core_helpers import (
    DTYPE,
    EPS,
    central_difference,
    classification_batch,
    conv_net,
    learner,
    meta_gradient,
    mlp,
    relative_error,
    single_thread,  # noqa: F401 (autouse fixture)
)

MODELS = {
    "mlp": lambda: (mlp(), classification_batch(shape=(4,))),
    "conv_batchnorm": lambda: (conv_net(), classification_batch()),
}


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("model", list(MODELS))
def test_second_order_meta_gradient_equals_central_finite_difference_along_random_directions(model, steps, engine):
    net, batch = MODELS[model]()
    maml = learner(net, steps=steps, engine=engine)
    _, analytic, _ = meta_gradient(maml, batch)
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        direction = torch.randn(analytic.shape, generator=g, dtype=DTYPE)
        fd = central_difference(maml, batch, direction)
        assert relative_error(fd, analytic @ direction) < 1e-6


def _reference_meta_loss(model, batch, theta, steps, alpha):
    """The MAML meta-objective written from its definition (plain autograd, values only)."""
    losses = []
    for i in range(len(batch)):
        params = _unflatten(model, theta)
        for _ in range(steps):
            params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            support = F.cross_entropy(functional_call(model, params, (batch.x_support[i],)), batch.y_support[i])
            grads = torch.autograd.grad(support, list(params.values()))
            params = {n: p - alpha * g for (n, p), g in zip(params.items(), grads)}
        losses.append(F.cross_entropy(functional_call(model, params, (batch.x_query[i],)), batch.y_query[i]))
    return torch.stack(losses).mean().item()


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_equals_finite_differences_in_every_coordinate(steps):
    """Every coordinate of the meta-gradient against a central difference (ε = 1e-5) of an independent
    implementation of the meta-objective; the meta-loss itself must agree with it too."""
    net = mlp(in_features=2, hidden=3)  # 2·3+3 + 3·3+3 + 3·3+3 = 33 parameters
    batch = classification_batch(tasks=2, shape=(2,))
    stats, analytic, _ = meta_gradient(learner(net, steps=steps, lr=0.5, engine="loop"), batch)
    theta, eps = parameters_to_vector(net.parameters()).detach(), 1e-5
    assert stats.loss.item() == pytest.approx(_reference_meta_loss(net, batch, theta, steps, 0.5), rel=1e-12)
    fd = torch.tensor(
        [
            (
                _reference_meta_loss(net, batch, theta + eps * e, steps, 0.5)
                - _reference_meta_loss(net, batch, theta - eps * e, steps, 0.5)
            )
            / (2 * eps)
            for e in torch.eye(theta.numel(), dtype=DTYPE)
        ]
    )
    assert relative_error(fd, analytic) < 1e-6


def _unflatten(model, vector):
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = vector[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def test_one_step_meta_gradient_equals_explicit_hessian_formula():
    """∇θ L_query(θ − α∇L_support(θ)) = (I − α H_support)ᵀ ∇θ' L_query(θ'), H from autograd.functional.hessian."""
    net = mlp(in_features=3, hidden=4)
    batch = classification_batch(tasks=1, shape=(3,), shots=3)
    alpha = 0.7
    x_s, y_s, x_q, y_q = batch.x_support[0], batch.y_support[0], batch.x_query[0], batch.y_query[0]

    def support_loss(theta):
        return F.cross_entropy(functional_call(net, _unflatten(net, theta), (x_s,)), y_s)

    def query_loss(theta):
        return F.cross_entropy(functional_call(net, _unflatten(net, theta), (x_q,)), y_q)

    theta = parameters_to_vector(net.parameters()).detach()
    hessian = torch.autograd.functional.hessian(support_loss, theta)
    adapted = theta - alpha * torch.func.grad(support_loss)(theta)
    expected = (torch.eye(theta.numel(), dtype=DTYPE) - alpha * hessian).T @ torch.func.grad(query_loss)(adapted)

    for engine in ("loop", "vmap"):
        _, analytic, _ = meta_gradient(learner(net, steps=1, lr=alpha, engine=engine), batch)
        assert relative_error(analytic, expected) < 1e-10
    assert relative_error(hessian, hessian.T) < 1e-12  # sanity: a true (symmetric) Hessian


def _query_gradient_at_adapted_parameters(maml, batch, steps):
    """mean over tasks of ∇θ' L_query(θ'ᵢ), θ'ᵢ from ``adapt`` (a plain autograd computation)."""
    total = None
    for i in range(len(batch)):
        adapted = maml.adapt(batch.x_support[i], batch.y_support[i], steps=steps)
        adapted = {n: t.clone().requires_grad_(True) for n, t in adapted.items()}
        loss = F.cross_entropy(functional_call(maml.model, adapted, (batch.x_query[i],)), batch.y_query[i])
        grads = torch.autograd.grad(loss, [adapted[n] for n, _ in maml.model.named_parameters()])
        g = parameters_to_vector(grads) / len(batch)
        total = g if total is None else total + g
    return total


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_maml_gradient_is_query_gradient_at_adapted_parameters(steps, engine):
    net = mlp()
    batch = classification_batch(shape=(4,))
    fomaml = learner(net, steps=steps, first_order=True, engine=engine, eval_steps=steps)
    _, first_order, _ = meta_gradient(fomaml, batch)
    assert relative_error(first_order, _query_gradient_at_adapted_parameters(fomaml, batch, steps)) < 1e-10

    _, second_order, _ = meta_gradient(learner(net, steps=steps, engine=engine), batch)
    assert relative_error(first_order, second_order) > 1e-2  # the Hessian term matters on a non-quadratic model


def test_zero_inner_steps_meta_gradient_is_plain_query_loss_gradient():
    """α = 0 cannot be configured (InnerLoopConfig requires lr > 0); zero inner steps is the same objective."""
    net = mlp()
    batch = classification_batch(shape=(4,))
    for engine in ("loop", "vmap"):
        stats, analytic, _ = meta_gradient(learner(net, steps=0, engine=engine), batch)
        net.zero_grad()
        loss = torch.stack([F.cross_entropy(net(batch.x_query[i]), batch.y_query[i]) for i in range(len(batch))]).mean()
        loss.backward()
        expected = parameters_to_vector([p.grad for p in net.parameters()])
        net.zero_grad()
        assert relative_error(analytic, expected) < 1e-12
        assert stats.loss.item() == pytest.approx(loss.item(), rel=1e-12)
        assert stats.support_losses.numel() == 0


def test_evaluate_with_zero_steps_is_the_unadapted_query_loss():
    net = mlp()
    batch = classification_batch(shape=(4,))
    curve = learner(net, steps=1).evaluate(batch, steps=0)
    with torch.no_grad():
        expected = torch.stack([F.cross_entropy(net(batch.x_query[i]), batch.y_query[i]) for i in range(len(batch))])
    assert curve.losses.shape == (len(batch), 1)
    torch.testing.assert_close(curve.losses[:, 0], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_zero_learned_rates_give_plain_query_gradient_and_rate_gradient_minus_support_times_query(engine):
    """Meta-SGD with every learned rate set to 0 (torch.no_grad): θ' = θ, so the model's meta-gradient is
    the plain query-loss gradient, and d L_query(θ − α⊙g_s)/dα at α = 0 is −g_s ⊙ g_q (non-zero)."""
    net = mlp()
    batch = classification_batch(tasks=1, shape=(4,))
    meta_sgd = learner(net, steps=1, learn_lr=True, lr_granularity="per_element", engine=engine)
    with torch.no_grad():
        for rate in meta_sgd.inner_lr.parameters():
            rate.zero_()
    _, _, after = meta_gradient(meta_sgd, batch)

    x_s, y_s, x_q, y_q = batch.x_support[0], batch.y_support[0], batch.x_query[0], batch.y_query[0]
    params = dict(net.named_parameters())
    g_s = torch.autograd.grad(F.cross_entropy(net(x_s), y_s), list(params.values()))
    g_q = torch.autograd.grad(F.cross_entropy(net(x_q), y_q), list(params.values()))
    for (name, _), gs, gq in zip(params.items(), g_s, g_q):
        torch.testing.assert_close(after.model.get_parameter(name).grad, gq, rtol=1e-12, atol=1e-14)
        rate_grad = after.inner_lr.rates[0][name.replace(".", "__")].grad
        torch.testing.assert_close(rate_grad, -gs * gq, rtol=1e-12, atol=1e-14)
    assert any(p.grad.abs().max() > 0 for p in after.inner_lr.parameters())


@pytest.mark.parametrize(
    "variant",
    [
        dict(learn_lr=True, lr_granularity="per_element"),  # Meta-SGD
        dict(learn_lr=True, lr_granularity="per_layer", lr_per_step=True),  # MAML++ LSLR
        dict(learn_lr=True, lr_granularity="scalar"),
    ],
    ids=["meta_sgd", "lslr", "learned_scalar"],
)
def test_meta_gradient_of_learned_inner_rates_matches_finite_differences(variant):
    net = conv_net()
    batch = classification_batch()
    maml = learner(net, steps=2, engine="vmap", **variant)
    _, analytic, copied = meta_gradient(maml, batch)
    rates = dict(copied.inner_lr.named_parameters())
    assert all(p.grad is not None for p in rates.values())
    rate_grads = {n: p.grad.abs().max().item() for n, p in rates.items()}
    # conv.bias's own rates scale its inner gradient, 0 up to rounding (BatchNorm with batch statistics follows
    # it): their meta-gradients are products with it, ε below the others is ample (measured: ~1e-30 below).
    shift_rates = [rate_grads.pop(n) for n in list(rate_grads) if n.endswith("conv__bias")]
    assert all(g <= EPS * max(rate_grads.values()) for g in shift_rates)
    assert all(g > 0 for g in rate_grads.values())
    direction = torch.randn(analytic.shape, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    assert relative_error(central_difference(maml, batch, direction), analytic @ direction) < 1e-6
