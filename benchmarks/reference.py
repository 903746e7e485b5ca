"""Reference MAML step: the plain per-task loop with ``torch.autograd.grad(create_graph=True)``.

This is how learn2learn, higher and TorchOpt run MAML: one task at a time, the inner gradient taken
with ``create_graph=True`` (second order) or detached (first order), the query loss of the adapted
weights back-propagated task by task. The network is the MAML paper's Conv4 in its canonical layer
order (conv 3×3 → BatchNorm(batch statistics) → ReLU → max-pool 2), written with ``torch.nn.functional``
so the reference carries no framework overhead of its own.

Also here: the same workload through ``higher`` (``innerloop_ctx``) and ``TorchOpt`` (functional
API), when those packages are installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CanonicalConv4(nn.Module):
    """4 × [conv 3×3 (pad 1) → BatchNorm2d(track_running_stats=False) → ReLU → max-pool 2] → flatten → Linear;
    with ``pooling="stride"``: stride-2 convolutions, no max-pool, the spatial mean → Linear."""

    def __init__(
        self, ways: int, in_channels: int = 1, hidden: int = 64, image_size: int = 28, pooling: str = "max"
    ) -> None:
        super().__init__()
        self.pooling = pooling
        stride = 2 if pooling == "stride" else 1
        layers, channels, size = [], in_channels, image_size
        for _ in range(4):
            layers += [
                nn.Conv2d(channels, hidden, 3, stride=stride, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=False),
                nn.ReLU(),
            ]
            if pooling == "max":
                layers.append(nn.MaxPool2d(2))
            channels, size = hidden, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden if pooling == "stride" else hidden * size * size, ways)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        return self.head(h.mean((-2, -1)) if self.pooling == "stride" else torch.flatten(h, 1))


def functional_conv4(params: Sequence[Tensor], x: Tensor, pooling: str = "max") -> Tensor:
    """``CanonicalConv4`` as a function of its parameter list (order of ``named_parameters``)."""
    h = x
    for block in range(4):
        w, b, gamma, beta = params[4 * block : 4 * block + 4]
        h = F.conv2d(h, w, b, stride=2 if pooling == "stride" else 1, padding=1)
        h = F.relu(F.batch_norm(h, None, None, gamma, beta, training=True))
        if pooling == "max":
            h = F.max_pool2d(h, 2)
    return F.linear(h.mean((-2, -1)) if pooling == "stride" else torch.flatten(h, 1), params[16], params[17])


def reference_meta_backward(
    model: nn.Module,
    x_s: Tensor,
    y_s: Tensor,
    x_q: Tensor,
    y_q: Tensor,
    *,
    steps: int,
    lr: float,
    first_order: bool,
) -> Tensor:
    """Accumulate the MAML meta-gradient (mean query loss over tasks) into ``model``'s ``.grad``."""
    params = list(model.parameters())
    tasks, total = x_s.shape[0], 0.0
    for i in range(tasks):
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(functional_conv4(fast, x_s[i], model.pooling), y_s[i])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [p - lr * (g.detach() if first_order else g) for p, g in zip(fast, grads)]
        query = F.cross_entropy(functional_conv4(fast, x_q[i], model.pooling), y_q[i]) / tasks
        query.backward()
        total += query.detach()
    return total


def higher_meta_backward(model, x_s, y_s, x_q, y_q, *, steps: int, lr: float, first_order: bool) -> Tensor:
    """The same step through ``higher.innerloop_ctx`` (as in higher's MAML example)."""
    import higher

    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    tasks, total = x_s.shape[0], 0.0
    for i in range(tasks):
        context = higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False, track_higher_grads=not first_order)
        with context as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(x_s[i]), y_s[i]))
            if first_order:  # higher's first order: the adapted weights, gradients passed straight to θ
                fast = fmodel.parameters()
                query = F.cross_entropy(fmodel(x_q[i]), y_q[i]) / tasks
                grads = torch.autograd.grad(query, list(fast))
                for p, g in zip(model.parameters(), grads):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                query = F.cross_entropy(fmodel(x_q[i]), y_q[i]) / tasks
                query.backward()
        total += query.detach()
    return total


def torchopt_meta_backward(model, x_s, y_s, x_q, y_q, *, steps: int, lr: float, first_order: bool) -> Tensor:
    """The same step through TorchOpt's functional API (``torchopt.sgd`` + ``apply_updates``)."""
    import torchopt
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    params = tuple(p for _, p in model.named_parameters())
    inner = torchopt.sgd(lr=lr)
    tasks, total = x_s.shape[0], 0.0
    for i in range(tasks):
        fast = params
        state = inner.init(fast)
        for _ in range(steps):
            out = functional_call(model, dict(zip(names, fast)), (x_s[i],))
            grads = torch.autograd.grad(F.cross_entropy(out, y_s[i]), fast, create_graph=not first_order)
            if first_order:
                grads = tuple(g.detach() for g in grads)
            updates, state = inner.update(grads, state, inplace=False)
            fast = torchopt.apply_updates(fast, updates, inplace=False)
        query = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (x_q[i],)), y_q[i]) / tasks
        query.backward()
        total += query.detach()
    return total


LIBRARIES: dict[str, tuple[str, Callable]] = {
    "reference": ("torch", reference_meta_backward),
    "higher": ("higher", higher_meta_backward),
    "torchopt": ("torchopt", torchopt_meta_backward),
}
