"""Typed settings of the inner loop (the ``algorithm`` config group) and of the outer optimiser."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from maml_cli.errors import MamlError

E = TypeVar("E", bound=Enum)


class LrGranularity(str, Enum):
    """How many inner learning rates α there are."""

    scalar = "scalar"  # one α for every parameter (MAML)
    per_layer = "per_layer"  # one α per parameter tensor (MAML++'s LSLR when per_step and learned)
    per_element = "per_element"  # one α per weight (Meta-SGD when learned)


class AdaptScope(str, Enum):
    """Which parameters the inner loop adapts."""

    all = "all"  # every trainable parameter adapts in the inner loop
    head = "head"  # only the head (ANIL); the body is meta-learned but never adapted


class BatchNormPolicy(str, Enum):
    """Which statistics BatchNorm normalises with."""

    transductive = "transductive"  # batch statistics of the set being processed, always (MAML paper)
    per_step = "per_step"  # MAML++: running statistics per inner step, used at evaluation


class Engine(str, Enum):
    """How the tasks of a meta-batch run (see ``maml_cli.core.engines``)."""

    auto = "auto"  # threads on CPU (loop for large tasks and models with dropout), vmap on accelerators
    loop = "loop"  # one task at a time, gradients accumulated (flat memory)
    threads = "threads"  # one task at a time per CPU thread, each with one intra-op thread
    vmap = "vmap"  # all tasks of a meta-batch at once with torch.func.vmap


@dataclass
class InnerLoopConfig:
    """How tasks are adapted, and which MAML-family variant is meta-trained.

    The variants are independent and compose: ``learn_lr`` with ``lr_granularity=per_element``
    is Meta-SGD; ``adapt=head`` is ANIL; ``learn_lr`` + ``lr_per_step`` + ``per_layer`` is
    MAML++'s LSLR; ``multi_step_loss_iterations > 0`` is MAML++'s multi-step loss, annealed to the
    final step's loss over that many iterations; ``first_order_iterations = N`` trains first-order
    for the first N iterations, then second-order (derivative-order annealing).
    """

    steps: int = 1  # inner steps during meta-training
    eval_steps: int = 10  # inner steps at validation / test time
    lr: float = 0.4  # α; with learn_lr only the initial value: MetaLearner.inner_lr(step, name) is the current one
    first_order: bool = False  # FOMAML: ∂θ'/∂θ taken as I
    first_order_iterations: int = 0
    learn_lr: bool = False
    lr_granularity: LrGranularity = LrGranularity.scalar
    lr_per_step: bool = False
    adapt: AdaptScope = AdaptScope.all
    multi_step_loss_iterations: int = 0
    batchnorm: BatchNormPolicy = BatchNormPolicy.transductive
    engine: Engine = Engine.auto
    eval_chunk: int = 50  # tasks adapted together at evaluation

    def __post_init__(self) -> None:
        self.lr_granularity = _enum(LrGranularity, self.lr_granularity, "algorithm.lr_granularity")
        self.adapt = _enum(AdaptScope, self.adapt, "algorithm.adapt")
        self.batchnorm = _enum(BatchNormPolicy, self.batchnorm, "algorithm.batchnorm")
        self.engine = _enum(Engine, self.engine, "algorithm.engine")
        check_range("algorithm.steps", self.steps, minimum=0)
        check_range("algorithm.eval_steps", self.eval_steps, minimum=0)
        check_range("algorithm.lr", self.lr, minimum=0.0, exclusive=True)
        check_range("algorithm.first_order_iterations", self.first_order_iterations, minimum=0)
        check_range("algorithm.multi_step_loss_iterations", self.multi_step_loss_iterations, minimum=0)
        check_range("algorithm.eval_chunk", self.eval_chunk, minimum=1)


class OptimizerName(str, Enum):
    """The ``torch.optim`` optimiser of the outer loop."""

    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    rmsprop = "rmsprop"


class Schedule(str, Enum):
    """The meta-learning rate's schedule."""

    constant = "constant"
    cosine = "cosine"


@dataclass
class OptimizerConfig:
    """The outer (meta) optimiser: any of ``torch.optim``'s common ones, a schedule and clipping."""

    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3  # β
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd / rmsprop only
    schedule: Schedule = Schedule.constant
    min_lr: float = 1e-5  # end of the cosine schedule
    clip_grad_norm: float | None = None  # meta-gradient norm clipping

    def __post_init__(self) -> None:
        self.name = _enum(OptimizerName, self.name, "optimizer.name")
        self.schedule = _enum(Schedule, self.schedule, "optimizer.schedule")
        check_range("optimizer.lr", self.lr, minimum=0.0, exclusive=True)
        check_range("optimizer.min_lr", self.min_lr, minimum=0.0)
        check_range("optimizer.weight_decay", self.weight_decay, minimum=0.0)
        check_range("optimizer.momentum", self.momentum, minimum=0.0)
        if self.clip_grad_norm is not None:
            check_range("optimizer.clip_grad_norm", self.clip_grad_norm, minimum=0.0, exclusive=True)


def check_range(key: str, value: float, minimum: float, exclusive: bool = False, maximum: float | None = None) -> None:
    """Raise MamlError unless ``value`` ≥ ``minimum`` (or > when ``exclusive``) and ≤ ``maximum`` if given.

    Args:
        key: The setting's name, for the message.
        value: Its value.
        minimum: The lower bound.
        exclusive: Whether ``minimum`` itself is out of range.
        maximum: The upper bound, if any.
    """
    if value < minimum or (exclusive and value == minimum) or (maximum is not None and value > maximum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        bound += f" and <= {maximum}" if maximum is not None else ""
        raise MamlError(f"{key}={value} is out of range: it must be {bound}")


def _enum(kind: type[E], value: object, key: str) -> E:
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise MamlError(f"{key}={value!r} is not valid; choose one of: {valid}") from None
