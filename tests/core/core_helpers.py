"""Tiny float64 models, task batches and numerical-derivative helpers shared by tests/core.

Everything is built in float64 explicitly (no global default-dtype change), so that gradients can be
compared with finite differences and across engines to ~1e-10.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from maml_cli.core import InnerLoopConfig, MetaLearner, TaskBatch

DTYPE = torch.float64
EPS = torch.finfo(DTYPE).eps
# Two computations of one float64 meta-gradient that differ only in the order of their roundings (kernels,
# blocking, vectorisation over tasks) agree to a few ε relative to its norm (measured: under 6ε between the
# engines); 1000ε leaves room for the error growth through a few inner steps' double-backward passes.
ROUNDING = 1000 * EPS


class TinyConvNet(nn.Module):
    """conv 3×3 → BatchNorm → tanh → spatial mean → linear: smooth everywhere, 1×6×6 inputs.

    With batch statistics, BatchNorm removes any per-channel shift: the output does not depend on
    ``conv.bias``, whose gradients are 0 in exact arithmetic (rounding leaves ~1e-17).
    """

    def __init__(self, ways: int = 3, channels: int = 3, track_running_stats: bool = False, batchnorm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels, track_running_stats=track_running_stats) if batchnorm else nn.Identity()
        self.head = nn.Linear(channels, ways)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.bn(self.conv(x))).mean((-2, -1)))


class TinyMLP(nn.Module):
    """in → tanh hidden → softplus hidden → linear ``head``: smooth, so finite differences are exact to O(ε²)."""

    def __init__(self, in_features: int = 4, ways: int = 3, hidden: int = 5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Softplus()
        )
        self.head = nn.Linear(hidden, ways)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def linear_model(features: int = 3, seed: int = 0) -> nn.Linear:
    """w ↦ x·w, no bias: with the squared error, a task loss that is quadratic in the parameters."""
    torch.manual_seed(seed)
    return nn.Linear(features, 1, bias=False).to(DTYPE)


def regression_batch(tasks: int = 2, shots: int = 4, queries: int = 3, features: int = 3, seed: int = 1) -> TaskBatch:
    """Random linear-regression tasks: inputs ``[tasks, n, features]``, targets ``[tasks, n, 1]``."""
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.randn(tasks, n, features, generator=g, dtype=DTYPE)  # noqa: E731
    y = lambda n: torch.randn(tasks, n, 1, generator=g, dtype=DTYPE)  # noqa: E731
    return TaskBatch(x(shots), y(shots), x(queries), y(queries))


def conv_net(seed: int = 0, **kwargs) -> TinyConvNet:
    torch.manual_seed(seed)
    return TinyConvNet(**kwargs).to(DTYPE)


def mlp(seed: int = 0, **kwargs) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(**kwargs).to(DTYPE)


def classification_batch(
    tasks: int = 3, ways: int = 3, shots: int = 2, queries: int = 3, shape=(1, 6, 6), seed: int = 1
) -> TaskBatch:
    """Random few-shot classification tasks (labels 0..ways-1, shots per class), float64 inputs."""
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1).clone()  # noqa: E731
    x_s = torch.randn(tasks, ways * shots, *shape, generator=g, dtype=DTYPE)
    x_q = torch.randn(tasks, ways * queries, *shape, generator=g, dtype=DTYPE)
    return TaskBatch(x_s, labels(shots), x_q, labels(queries))


def learner(model: nn.Module, loss: str = "cross_entropy", **inner) -> MetaLearner:
    inner.setdefault("lr", 0.5)
    return MetaLearner(model, loss=loss, inner=InnerLoopConfig(**inner))


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def meta_gradient(learner: MetaLearner, batch: TaskBatch, iteration: int = 0):
    """(stats, flat meta-gradient over the trainable parameters) of one ``meta_backward`` on a copy."""
    copied = copy.deepcopy(learner)
    stats = copied.meta_backward(batch, iteration)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable(copied)]
    return stats, parameters_to_vector(grads), copied


def meta_loss_at(learner: MetaLearner, batch: TaskBatch, vector: Tensor, iteration: int = 0) -> float:
    """The meta-loss with the trainable parameters (model and learned rates) set to ``vector``."""
    copied = copy.deepcopy(learner)
    with torch.no_grad():
        vector_to_parameters(vector, trainable(copied))
    return copied.meta_backward(batch, iteration).loss.item()


def flat_parameters(learner: MetaLearner) -> Tensor:
    return parameters_to_vector(trainable(learner)).detach().clone()


def central_difference(learner: MetaLearner, batch: TaskBatch, direction: Tensor, eps: float = 1e-5, iteration=0):
    """(L(θ + εd) − L(θ − εd)) / 2ε: the meta-loss's directional derivative along ``direction``."""
    theta = flat_parameters(learner)
    plus = meta_loss_at(learner, batch, theta + eps * direction, iteration)
    minus = meta_loss_at(learner, batch, theta - eps * direction, iteration)
    return (plus - minus) / (2 * eps)


def assert_accuracy_of(accuracy: Tensor, logits: Tensor, labels: Tensor, near_tie: float = 1e-9) -> None:
    """``accuracy`` is that of ``logits`` (the same predictions computed another way), except that rounding may
    flip an image whose top two logits are within ``near_tie``, far above float64 rounding differences."""
    top = logits.topk(2, dim=-1).values
    ties = (top[..., 0] - top[..., 1] <= near_tie).sum(-1)
    correct = (logits.argmax(-1) == labels).sum(-1)
    assert ((accuracy * labels.shape[-1]).round() - correct).abs().le(ties).all()


def relative_error(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=DTYPE), torch.as_tensor(b, dtype=DTYPE)
    scale = max(a.norm().item(), b.norm().item())
    return 0.0 if scale == 0 else (a - b).norm().item() / scale


def grads_by_name(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one intra-op thread; with several, OpenMP's spin-waiting makes them
    20–30× slower on a busy 2-core machine. Import this autouse fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
