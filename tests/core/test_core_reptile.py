"""Reptile: its meta-gradient is θ − φ, φ the end of the inner loop on all of the task's examples (support and
query), with SGD or the paper's Adam, on mini-batches or not; plain SGD on it is the paper's outer step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from maml_cli.core import InnerLoopConfig, OptimizerConfig, TaskBatch, build_optimizer, build_scheduler
from maml_cli.core.reptile import inner_batches
from maml_cli.errors import MamlError
from tests.core.core_helpers import (
    DTYPE,
    ROUNDING,
    classification_batch,
    flat_parameters,
    learner,
    linear_model,
    meta_gradient,
    mlp,
    regression_batch,
    relative_error,
    single_thread,  # noqa: F401 (autouse fixture)
)

LR = 0.1


def _task_data(batch: TaskBatch, i: int) -> tuple[Tensor, Tensor]:
    """Task ``i``'s support and query sets together: what Reptile's inner loop trains on."""
    return torch.cat([batch.x_support[i], batch.x_query[i]]), torch.cat([batch.y_support[i], batch.y_query[i]])


def _closed_form_phi(theta: Tensor, x: Tensor, y: Tensor, steps: int) -> Tensor:
    """k steps of SGD at rate α on L(w) = (1/n)‖Xw − y‖² from θ end at φ = w* + (I − αQ)ᵏ(θ − w*), where
    Q = (2/n)XᵀX is L's Hessian and w* its minimiser (the least-squares solution)."""
    q = 2 / len(x) * x.T @ x
    w_star = torch.linalg.solve(x.T @ x, x.T @ y)
    return w_star + torch.linalg.matrix_power(torch.eye(len(q), dtype=DTYPE) - LR * q, steps) @ (theta - w_star)


@pytest.mark.parametrize("steps", [1, 4])
def test_meta_gradient_is_theta_minus_phi_in_closed_form_on_a_quadratic_loss(steps):
    model, batch = linear_model(), regression_batch()
    reptile = learner(model, loss="mse", method="reptile", steps=steps, lr=LR)
    _, meta_grad, _ = meta_gradient(reptile, batch)
    theta = model.weight.detach().T
    phis = [_closed_form_phi(theta, *_task_data(batch, i), steps) for i in range(len(batch))]
    expected = torch.stack([theta - phi for phi in phis]).mean(0)
    assert relative_error(meta_grad, expected.flatten()) < ROUNDING  # float64, a 3×3 well-conditioned solve


def test_plain_sgd_on_the_meta_gradient_moves_theta_towards_the_mean_adapted_weights():
    """θ ← θ − ε(θ − φ̄) = θ + ε(φ̄ − θ): the paper's meta-update; φ from the learner's own ``adapt``."""
    model, batch = linear_model(), regression_batch()
    reptile = learner(model, loss="mse", method="reptile", steps=3, lr=LR)
    theta = flat_parameters(reptile)
    phis = [reptile.adapt(*_task_data(batch, i), steps=3) for i in range(len(batch))]
    mean_phi = torch.stack([phi["weight"].flatten() for phi in phis]).mean(0)
    optimizer = build_optimizer(reptile.parameters(), OptimizerConfig(name="sgd", lr=0.5))
    stats = reptile.meta_backward(batch)
    optimizer.step()
    assert relative_error(flat_parameters(reptile), theta + 0.5 * (mean_phi - theta)) < ROUNDING
    query_losses = [F.mse_loss(reptile.predict(phi, batch.x_query[i]), batch.y_query[i]) for i, phi in enumerate(phis)]
    assert stats.query_loss.item() == pytest.approx(torch.stack(query_losses).mean().item(), rel=ROUNDING)


def test_evaluation_adapts_on_the_support_set_alone():
    model, batch = linear_model(), regression_batch()
    reptile = learner(model, loss="mse", method="reptile", steps=1, lr=LR)
    curve = reptile.evaluate(batch, steps=3)
    theta = model.weight.detach().T
    for i in range(len(batch)):
        phi = _closed_form_phi(theta, batch.x_support[i], batch.y_support[i], 3)
        expected = F.mse_loss(batch.x_query[i] @ phi, batch.y_query[i])
        assert curve.losses[i, -1].item() == pytest.approx(expected.item(), rel=ROUNDING)


def test_each_inner_step_trains_on_its_mini_batch():
    model, batch = linear_model(), regression_batch()  # 4 + 3 examples a task, in batches of 3 for 4 steps
    reptile = learner(model, loss="mse", method="reptile", steps=4, lr=LR, inner_batch=3)
    torch.manual_seed(5)
    _, meta_grad, _ = meta_gradient(reptile, batch)
    torch.manual_seed(5)  # the same draw: meta_backward draws the batches from torch's generator
    batches = inner_batches(len(batch), 7, 4, 3, torch.device("cpu"))
    theta, expected = model.weight.detach().T, []
    for i in range(len(batch)):
        x, y = _task_data(batch, i)
        w = theta
        for rows in batches[i]:
            w = w - LR * 2 / len(rows) * x[rows].T @ (x[rows] @ w - y[rows])
        expected.append(theta - w)
    assert relative_error(meta_grad, torch.stack(expected).mean(0).flatten()) < ROUNDING


def test_inner_batches_go_through_the_examples_epoch_by_epoch_each_task_in_its_own_order():
    torch.manual_seed(0)
    batches = inner_batches(tasks=3, examples=10, steps=7, size=4, device=torch.device("cpu"))
    assert batches.shape == (3, 7, 4)
    for order in batches.flatten(1).tolist():  # 28 = two epochs of 10, then 8 of a third
        assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10)) and len(set(order[20:])) == 8
    assert not torch.equal(batches[0], batches[1])  # the same order twice: a chance of 1 in 10!² at most


def test_inner_adam_steps_as_torch_optim_adam_with_the_papers_betas():
    net, batch = mlp(), classification_batch(shape=(4,))
    reptile = learner(net, method="reptile", inner_optimizer="adam", steps=4, lr=0.01)
    _, meta_grad, _ = meta_gradient(reptile, batch)
    expected = []
    for i in range(len(batch)):
        adapted = copy.deepcopy(net)
        adam = torch.optim.Adam(adapted.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
        x, y = _task_data(batch, i)
        for _ in range(4):
            adam.zero_grad()
            F.cross_entropy(adapted(x), y).backward()
            adam.step()
        expected.append(parameters_to_vector(net.parameters()) - parameters_to_vector(adapted.parameters()))
    # The same formula, its operations in another order: rounding, relative to steps ~α, not to θ
    assert relative_error(meta_grad, torch.stack(expected).mean(0).detach()) < 1e-10


def test_the_linear_schedule_anneals_the_meta_step_size_to_min_lr_as_the_paper():
    cfg = OptimizerConfig(name="sgd", lr=1.0, min_lr=0.0, schedule="linear")
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], cfg)
    scheduler = build_scheduler(optimizer, cfg, iterations=4)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]  # exact: binary fractions


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(method="reptile", learn_lr=True), "algorithm.learn_lr=True is a MAML setting"),
        (dict(method="imaml", adapt="head"), "algorithm.adapt=head is a MAML setting"),
        (dict(method="reptile", first_order=True), "algorithm.first_order=True is a MAML setting"),
        (dict(method="imaml", batchnorm_weights="per_step"), "algorithm.batchnorm_weights=per_step is a MAML"),
        (dict(method="imaml", inner_batch=10), "algorithm.inner_batch is Reptile's"),
        (dict(inner_batch=10), "algorithm.inner_batch is Reptile's"),
        (dict(inner_optimizer="adam"), "algorithm.inner_optimizer=adam needs an inner loop that is not differentiated"),
        (dict(method="imaml", lam=0.0), "algorithm.lam=0.0 is out of range"),
        (dict(method="imaml", cg_steps=0), "algorithm.cg_steps=0 is out of range"),
        (dict(method="reptile", inner_batch=0), "algorithm.inner_batch=0 is out of range"),
        (dict(method="reptel"), "algorithm.method='reptel' is not valid; choose one of: maml, reptile, imaml"),
    ],
)
def test_settings_that_do_not_apply_to_the_method_are_errors_naming_them(settings, message):
    with pytest.raises(MamlError, match="^" + message.replace("(", r"\(")):
        InnerLoopConfig(**settings)


def test_adam_is_allowed_for_first_order_maml():
    assert InnerLoopConfig(inner_optimizer="adam", first_order=True).inner_optimizer.value == "adam"
