"""Conv4's fast forward (pool before ReLU, folded first conv+BatchNorm, channels-last on CPU) computes
exactly the canonical network: conv → BatchNorm → ReLU → pool, module by module, in float64 —
outputs, first- and second-order MAML meta-gradients, with both engines."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maml_cli.core import InnerLoopConfig, MetaLearner
from maml_cli.data.tasks import TaskBatch
from maml_cli.models import Conv4
from maml_cli.models.conv4 import _foldable

DTYPE = torch.float64


def canonical(model: Conv4, x: torch.Tensor) -> torch.Tensor:
    """The layers in their written order (``model.features`` is the unchanged nn.Sequential)."""
    h = model.features(x)
    h = h.mean((-2, -1)) if model.pooling.value == "stride" else torch.flatten(h, 1)
    return model.head(h)


def _manual(model: Conv4, params, x):
    h = x
    stride = 2 if model.pooling.value == "stride" else 1
    for i in range(4):
        w, b, gamma, beta = params[4 * i : 4 * i + 4]
        h = F.relu(F.batch_norm(F.conv2d(h, w, b, stride=stride, padding=1), None, None, gamma, beta, training=True))
        if model.pooling.value == "max":
            h = F.max_pool2d(h, 2)
    h = h.mean((-2, -1)) if model.pooling.value == "stride" else torch.flatten(h, 1)
    return F.linear(h, params[16], params[17])


def model(pooling: str, seed: int = 0, **kwargs) -> Conv4:
    torch.manual_seed(seed)
    return Conv4(5, hidden=32, pooling=pooling, **kwargs).to(DTYPE)  # 32 filters: the first block is folded


@pytest.mark.parametrize("pooling", ["max", "stride"])
def test_forward_equals_the_canonical_layer_order(pooling):
    net = model(pooling)
    assert _foldable(net.features[0][0], net.features[0][1], torch.zeros(1, 1, 28, 28))
    x = torch.randn(12, 1, 28, 28, dtype=DTYPE)
    torch.testing.assert_close(net(x), canonical(net, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net(x), _manual(net, list(net.parameters()), x), rtol=1e-12, atol=1e-12)


def test_running_statistics_path_still_updates_the_buffers():
    net = model("max", track_running_stats=True)
    twin = model("max", track_running_stats=True)
    x = torch.randn(6, 1, 28, 28, dtype=DTYPE)
    torch.testing.assert_close(net(x), canonical(twin, x), rtol=1e-12, atol=1e-12)
    for (name, a), (_, b) in zip(net.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _batch(tasks=3, ways=5, queries=2, seed=1) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1).clone()  # noqa: E731
    return TaskBatch(
        torch.randn(tasks, ways, 1, 28, 28, generator=g, dtype=DTYPE), labels(1),
        torch.randn(tasks, ways * queries, 1, 28, 28, generator=g, dtype=DTYPE), labels(queries),
    )


def _reference_meta_gradient(net: Conv4, batch: TaskBatch, steps: int, first_order: bool, lr: float):
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(batch)):
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(_manual(net, fast, batch.x_support[i]), batch.y_support[i])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [p - lr * (g.detach() if first_order else g) for p, g in zip(fast, grads)]
        query = F.cross_entropy(_manual(net, fast, batch.x_query[i]), batch.y_query[i]) / len(batch)
        for t, g in zip(total, torch.autograd.grad(query, params)):
            t += g
    return torch.cat([t.flatten() for t in total])


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("steps,first_order", [(1, False), (1, True), (2, False)])
def test_meta_gradient_equals_the_plain_autograd_reference(engine, steps, first_order):
    net, batch = model("max"), _batch()
    learner = MetaLearner(net, inner=InnerLoopConfig(steps=steps, lr=0.4, first_order=first_order, engine=engine))
    learner.meta_backward(batch)
    ours = torch.cat([p.grad.flatten() for p in net.parameters()])
    reference = _reference_meta_gradient(model("max"), batch, steps, first_order, 0.4)
    assert (ours - reference).norm() <= 1e-10 * reference.norm()
    first_conv_bias = net.features[0][0].bias.grad
    assert torch.equal(first_conv_bias, torch.zeros_like(first_conv_bias))  # folded into BatchNorm: exactly 0


def test_evaluate_gives_the_same_curve_task_by_task_vectorised_and_mixed():
    """loop: all per task; vmap: all vectorised; auto on CPU: vectorised adaptation, per-task query passes."""
    batch = _batch(tasks=3)
    curves = {}
    for engine in ("loop", "vmap", "auto"):
        learner = MetaLearner(model("stride"), inner=InnerLoopConfig(engine=engine, eval_steps=3, eval_chunk=2))
        curves[engine] = learner.evaluate(batch)
    for engine in ("vmap", "auto"):
        torch.testing.assert_close(curves[engine].losses, curves["loop"].losses, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(curves[engine].accuracies, curves["loop"].accuracies)
