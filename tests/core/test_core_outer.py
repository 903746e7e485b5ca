"""The outer loop: optimisers by name, the meta-learning-rate schedule and meta-gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maml_cli.core import OptimizerConfig, build_optimizer, build_scheduler, clip_meta_gradient
from maml_cli.errors import MamlError
from tests.core.core_helpers import single_thread  # noqa: F401 (autouse fixture)

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def _params():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)
    return net


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_build_optimizer_builds_each_named_optimizer_over_trainable_parameters_only(name):
    net = _params()
    cfg = OptimizerConfig(name=name, lr=0.01, weight_decay=0.001, momentum=0.5)
    optimizer = build_optimizer(net.parameters(), cfg)
    assert type(optimizer) is OPTIMIZERS[name]
    (group,) = optimizer.param_groups
    assert group["params"] == [net.weight]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.001
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.5
    net.weight.grad = torch.ones_like(net.weight)
    before = net.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, net.weight)


def test_unknown_optimizer_or_schedule_names_are_rejected():
    with pytest.raises(MamlError, match="optimizer.name"):
        OptimizerConfig(name="lbfgs")
    with pytest.raises(MamlError, match="optimizer.schedule"):
        OptimizerConfig(schedule="step")
    with pytest.raises(MamlError, match="optimizer.lr"):
        OptimizerConfig(lr=0)


def test_cosine_schedule_anneals_from_lr_to_min_lr_over_the_iterations():
    net = _params()
    cfg = OptimizerConfig(lr=1e-2, min_lr=1e-4, schedule="cosine")
    optimizer = build_optimizer(net.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, iterations=20)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-4)
    assert lrs[10] == pytest.approx(1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi / 2)) / 2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_a_time_budget_ends_the_schedule_when_it_comes_before_the_iterations():
    net = _params()
    cfg = OptimizerConfig(lr=1e-2, min_lr=0.0, schedule="linear", span="max_time")
    optimizer = build_optimizer(net.parameters(), cfg)
    spent = [0.0]  # the share of the budget spent, as the caller's clock says
    scheduler = build_scheduler(optimizer, cfg, iterations=100, budget_spent=lambda: spent[0])
    lrs = []
    for share in (0.005, 0.5, 0.75, 1.0):  # step 1 of 100 with 0.5% of the budget spent, step 2 with half ...
        spent[0] = share
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-2 * (1 - 0.01), 1e-2 * 0.5, 1e-2 * 0.25, 0.0])  # the larger of the two shares


def test_a_schedule_span_other_than_iterations_or_max_time_is_rejected():
    with pytest.raises(MamlError, match="optimizer.span='hours' is not valid; choose one of: iterations, max_time"):
        OptimizerConfig(span="hours")


def test_constant_schedule_keeps_the_meta_learning_rate():
    net = _params()
    cfg = OptimizerConfig(lr=3e-3)
    optimizer = build_optimizer(net.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, iterations=5)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)


def test_clip_meta_gradient_clips_the_global_norm_and_returns_the_norm_before():
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # global norm 5; c has no grad
    norm = clip_meta_gradient([a, b, c], OptimizerConfig(clip_grad_norm=1.0))
    assert norm.item() == pytest.approx(5.0)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]), rtol=1e-5, atol=1e-6)
    assert c.grad is None

    small = torch.tensor([0.3, 0.4])
    a.grad = small.clone()
    clip_meta_gradient([a], OptimizerConfig(clip_grad_norm=1.0))
    torch.testing.assert_close(a.grad, small)  # under the threshold: untouched


def test_no_clipping_when_clip_grad_norm_is_unset():
    a = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([30.0, 40.0])
    assert clip_meta_gradient([a], OptimizerConfig()) is None
    torch.testing.assert_close(a.grad, torch.tensor([30.0, 40.0]))
    with pytest.raises(MamlError):
        OptimizerConfig(clip_grad_norm=0.0)
