"""Conv4's fast forward (pool before ReLU, folded first conv+BatchNorm pooled a few images at a time,
channels-last, max-pooling that keeps only its indices on CPU) computes the canonical network, conv → BatchNorm
→ ReLU → pool module by module, up to float64 rounding: outputs, first- and second-order MAML meta-gradients,
with both engines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maml_cli.core import InnerLoopConfig, MetaLearner, TaskBatch
from maml_cli.models import Conv4, conv4
from maml_cli.models.conv4 import _foldable, _images, _MatmulMaxPool2x2, _MaxPool2x2

DTYPE = torch.float64
EPS = torch.finfo(DTYPE).eps


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
    # Exact by construction: with running statistics nothing is folded, so each BatchNorm gets the output of the
    # same convolution on the same input (max-pooling selects values and commutes exactly with ReLU), in one
    # process and thread count: the same kernels on the same values.
    for (name, a), (_, b) in zip(net.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def _batch(tasks=3, ways=5, queries=2, seed=1) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1).clone()  # noqa: E731
    return TaskBatch(
        torch.randn(tasks, ways, 1, 28, 28, generator=g, dtype=DTYPE),
        labels(1),
        torch.randn(tasks, ways * queries, 1, 28, 28, generator=g, dtype=DTYPE),
        labels(queries),
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
    # Exact by construction: the folded first block multiplies its conv bias by 0 (BatchNorm cancels it).
    assert torch.equal(first_conv_bias, torch.zeros_like(first_conv_bias))


def test_evaluate_gives_the_same_curve_task_by_task_vectorised_and_mixed():
    """loop: all per task; threads: per task, side by side; vmap: all vectorised; auto on CPU: vectorised
    adaptation, per-task query passes on threads."""
    batch = _batch(tasks=3)
    learners, curves = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for engine in ("loop", "threads", "vmap", "auto"):
            inner = InnerLoopConfig(engine=engine, eval_steps=3, eval_chunk=2)
            learners[engine] = MetaLearner(model("max"), inner=inner)
            curves[engine] = learners[engine].evaluate(batch)
    finally:
        torch.set_num_threads(threads)
    # Accuracy is a step function of the logits: only an image whose top two logits are within rounding of each
    # other (1e-9 is far above it) may be classified differently by two engines.
    top = _query_logits(learners["loop"], batch, steps=3).topk(2, dim=-1).values
    near_ties = (top[..., 0] - top[..., 1] <= 1e-9).sum(-1)
    for engine in ("threads", "vmap", "auto"):
        torch.testing.assert_close(curves[engine].losses, curves["loop"].losses, rtol=1e-10, atol=1e-12)
        flips = (curves[engine].accuracies - curves["loop"].accuracies) * batch.y_query.shape[1]
        assert (flips.round().abs() <= near_ties).all()


def _query_logits(learner: MetaLearner, batch: TaskBatch, steps: int) -> torch.Tensor:
    """[tasks, steps + 1, queries, ways]: each task's query logits after 0..steps inner steps."""
    return torch.stack(
        [
            torch.stack([learner.predict(learner.adapt(x_s, y_s, s), x_q, s) for s in range(steps + 1)])
            for x_s, y_s, x_q in zip(batch.x_support, batch.y_support, batch.x_query)
        ]
    )


def _pool(x: torch.Tensor) -> torch.Tensor:
    return _MaxPool2x2.apply(x)[0]


@pytest.mark.parametrize("size", [8, 7])  # an odd size drops the last row and column, as max_pool2d does
def test_cpu_max_pooling_equals_max_pool2d_to_second_order_and_under_vmap(size):
    x = torch.randn(3, 2, size, size, dtype=DTYPE, requires_grad=True)
    torch.testing.assert_close(_pool(x), F.max_pool2d(x, 2), rtol=0, atol=0)  # exact: both select the same values
    torch.autograd.gradcheck(_pool, (x,))
    torch.autograd.gradgradcheck(_pool, (x,))
    batched = torch.randn(4, 3, 2, size, size, dtype=DTYPE)
    weights = torch.randn(2, 2, 3, 3, dtype=DTYPE)

    def second_order(w, pool, images):  # ∇w of a loss through one inner gradient step: a double backward
        loss = lambda w: pool(torch.tanh(F.conv2d(images, w, padding=1))).square().sum()  # noqa: E731
        return torch.func.grad(lambda w: loss(w - 0.1 * torch.func.grad(loss)(w)))(w)

    ours = torch.func.vmap(second_order, in_dims=(None, None, 0))(weights, _pool, batched)
    native = torch.stack([second_order(weights, lambda h: F.max_pool2d(h, 2), images) for images in batched])
    torch.testing.assert_close(ours, native, rtol=1e-12, atol=1e-12)


def test_cpu_max_pooling_keeps_only_its_indices_for_the_backward_pass():
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _pool(x * 1)
    assert [t.dtype for t in saved] == [torch.int64] and saved[0].shape == (4, 8, 8, 8)


@pytest.mark.parametrize("size", [8, 7])
def test_cpu_first_block_pools_its_product_a_chunk_of_images_at_a_time_to_second_order(size, monkeypatch):
    monkeypatch.setattr(conv4, "_CHUNK_BYTES", 4 * 3 * size * size * 2)  # 2 images a chunk: 5 images in 3 chunks
    rows = torch.randn(5 * size * size, 4, dtype=DTYPE, requires_grad=True)
    weight = torch.randn(3, 4, dtype=DTYPE, requires_grad=True)
    fused = lambda r, w: _MatmulMaxPool2x2.apply(r, w, size, size)[0]  # noqa: E731
    native = lambda r, w: F.max_pool2d(_images(r @ w.T, size, size), 2)  # noqa: E731
    # A chunk's product is another GEMM call than the whole one, free to sum in another order: each 4-term dot
    # product is within 4ε·Σ|rᵢwᵢ| of the exact one (Higham), and max-pooling moves no value further than that.
    bound = 2 * 4 * EPS * (rows.abs() @ weight.abs().T).max().item()
    torch.testing.assert_close(fused(rows, weight), native(rows, weight), rtol=0, atol=bound)
    torch.autograd.gradcheck(fused, (rows, weight))
    torch.autograd.gradgradcheck(fused, (rows, weight))

    def second_order(w, pool, r):  # ∇w of a loss through one inner gradient step: a double backward
        loss = lambda w: torch.tanh(pool(r, w)).square().sum()  # noqa: E731
        return torch.func.grad(lambda w: loss(w - 0.1 * torch.func.grad(loss)(w)))(w)

    batched = torch.randn(3, *rows.shape, dtype=DTYPE)
    ours = torch.func.vmap(second_order, in_dims=(None, None, 0))(weight.detach(), fused, batched)
    reference = torch.stack([second_order(weight.detach(), native, r) for r in batched])
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_cpu_conv4_never_keeps_a_full_resolution_activation_for_the_backward_pass(monkeypatch):
    monkeypatch.setattr(conv4, "_CHUNK_BYTES", 4 * 64 * 28 * 28 * 3)  # 3 images a chunk
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = Conv4(5, pooling="max")(torch.randn(10, 1, 28, 28)).square().sum()
    assert saved and not any(t.dim() == 4 and t.shape[-2:] == (28, 28) for t in saved)  # first block: 28×28
    loss.backward()
