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
    per_step = "per_step"  # running statistics per inner step, used to normalise at evaluation (non-transductive)


class BatchNormWeights(str, Enum):
    """What becomes of BatchNorm's weights and biases (γ, β)."""

    adapted = "adapted"  # one set, adapted in the inner loop like every other weight (MAML)
    meta_learned = "meta_learned"  # one set, meta-learned only: the inner loop leaves it alone
    per_step = "per_step"  # MAML++'s BNWB: a meta-learned set per inner step, not adapted in the inner loop


class Engine(str, Enum):
    """How the tasks of a meta-batch run (see ``maml_cli.core.engines``)."""

    auto = "auto"  # on CPU vmap for tiny tasks, threads for small, loop for large and with dropout; vmap elsewhere
    loop = "loop"  # one task at a time, gradients accumulated (flat memory)
    threads = "threads"  # one task at a time per CPU thread, each with one intra-op thread
    vmap = "vmap"  # the tasks of a meta-batch at once with torch.func.vmap (on CPU, in chunks over the threads)


class Method(str, Enum):
    """How the meta-gradient is computed from each task's adaptation."""

    maml = "maml"  # differentiate the query loss through the inner steps (the MAML family: every toggle above)
    reptile = "reptile"  # θ − φ: move θ towards the adapted parameters (Nichol et al. 2018; maml_cli.core.reptile)
    imaml = "imaml"  # the implicit gradient of a proximal inner problem (Rajeswaran et al. 2019; maml_cli.core.imaml)


class InnerOptimizer(str, Enum):
    """The update rule of the inner steps."""

    sgd = "sgd"  # φ ← φ − α ∇L
    adam = "adam"  # Adam at lr α with β₁ = 0, β₂ = 0.999 (the Reptile paper's), its moments fresh for each task


@dataclass
class InnerLoopConfig:
    """How tasks are adapted, and which MAML-family variant is meta-trained.

    The variants are independent and compose: ``learn_lr`` with ``lr_granularity=per_element``
    is Meta-SGD; ``adapt=head`` is ANIL; ``learn_lr`` + ``lr_per_step`` + ``per_layer`` is
    MAML++'s LSLR; ``multi_step_loss_iterations > 0`` is MAML++'s multi-step loss, annealed epoch by
    epoch (of ``iterations_per_epoch``) to the final step's loss over that many iterations;
    ``first_order_iterations = N`` trains first-order for the first N iterations, then second-order
    (derivative-order annealing); ``batchnorm_weights=per_step`` is MAML++'s per-step BatchNorm weights.
    ``method=reptile`` and ``method=imaml`` replace MAML's meta-gradient with their own (the toggles of
    MAML's do not apply to them); ``inner_optimizer``, ``inner_batch``, ``lam`` and ``cg_steps`` are theirs.
    """

    steps: int = 1  # inner steps during meta-training
    eval_steps: int = 10  # inner steps at validation / test time
    lr: float = 0.4  # α; with learn_lr only the initial value: MetaLearner.inner_lr(step, name) is the current one
    lr_init_range: list[float] | None = None  # [low, high]: learned α start uniform in it, not at lr (Meta-SGD)
    first_order: bool = False  # FOMAML: ∂θ'/∂θ taken as I
    first_order_iterations: int = 0
    learn_lr: bool = False
    lr_granularity: LrGranularity = LrGranularity.scalar
    lr_per_step: bool = False
    adapt: AdaptScope = AdaptScope.all
    multi_step_loss_iterations: int = 0
    iterations_per_epoch: int = 500  # MAML++'s epoch (total_iter_per_epoch): the multi-step loss changes per epoch
    batchnorm: BatchNormPolicy = BatchNormPolicy.transductive
    batchnorm_weights: BatchNormWeights = BatchNormWeights.adapted
    engine: Engine = Engine.auto
    eval_chunk: int = 50  # tasks adapted together at evaluation
    method: Method = Method.maml
    inner_optimizer: InnerOptimizer = InnerOptimizer.sgd
    inner_batch: int | None = None  # Reptile: examples per inner step in meta-training (default: all of the task's)
    lam: float = 2.0  # iMAML's λ, the weight of the proximal term λ/2·‖φ − θ‖² (the paper's)
    cg_steps: int = 5  # iMAML: conjugate-gradient steps of the implicit meta-gradient (the paper's)

    def __post_init__(self) -> None:
        self.lr_granularity = _enum(LrGranularity, self.lr_granularity, "algorithm.lr_granularity")
        self.adapt = _enum(AdaptScope, self.adapt, "algorithm.adapt")
        self.batchnorm = _enum(BatchNormPolicy, self.batchnorm, "algorithm.batchnorm")
        self.batchnorm_weights = _enum(BatchNormWeights, self.batchnorm_weights, "algorithm.batchnorm_weights")
        self.engine = _enum(Engine, self.engine, "algorithm.engine")
        check_range("algorithm.steps", self.steps, minimum=0)
        check_range("algorithm.eval_steps", self.eval_steps, minimum=0)
        check_range("algorithm.lr", self.lr, minimum=0.0, exclusive=True)
        check_range("algorithm.first_order_iterations", self.first_order_iterations, minimum=0)
        check_range("algorithm.multi_step_loss_iterations", self.multi_step_loss_iterations, minimum=0)
        check_range("algorithm.iterations_per_epoch", self.iterations_per_epoch, minimum=1)
        if self.lr_init_range is not None:
            self._check_lr_init_range(list(self.lr_init_range))
        check_range("algorithm.eval_chunk", self.eval_chunk, minimum=1)
        self.method = _enum(Method, self.method, "algorithm.method")
        self.inner_optimizer = _enum(InnerOptimizer, self.inner_optimizer, "algorithm.inner_optimizer")
        check_range("algorithm.lam", self.lam, minimum=0.0, exclusive=True)
        check_range("algorithm.cg_steps", self.cg_steps, minimum=1)
        if self.inner_batch is not None:
            check_range("algorithm.inner_batch", self.inner_batch, minimum=1)
        self._check_method()

    def _check_lr_init_range(self, bounds: list[float]) -> None:
        if len(bounds) != 2:
            raise MamlError(f"algorithm.lr_init_range={bounds} must be two values [low, high]")
        if not self.learn_lr:
            raise MamlError("algorithm.lr_init_range draws the initial learned rates: it needs algorithm.learn_lr=true")
        check_range("algorithm.lr_init_range[0]", bounds[0], minimum=0.0, exclusive=True)
        check_range("algorithm.lr_init_range[1]", bounds[1], minimum=bounds[0])

    def _check_method(self) -> None:
        """Reptile and iMAML compute meta-gradients of their own: the toggles of MAML's do not apply to them."""
        if self.inner_batch is not None and self.method is not Method.reptile:
            raise MamlError("algorithm.inner_batch is Reptile's mini-batch size: it needs algorithm.method=reptile")
        if self.method is Method.maml:
            if self.inner_optimizer is InnerOptimizer.adam and not self.first_order:
                raise MamlError(
                    "algorithm.inner_optimizer=adam needs an inner loop that is not differentiated through: "
                    "algorithm.method=reptile or imaml, or algorithm.first_order=true"
                )
            return
        maml_only = {
            "first_order": self.first_order,
            "first_order_iterations": self.first_order_iterations > 0,
            "learn_lr": self.learn_lr,
            "adapt": self.adapt is not AdaptScope.all,
            "multi_step_loss_iterations": self.multi_step_loss_iterations > 0,
            "batchnorm_weights": self.batchnorm_weights is not BatchNormWeights.adapted,
        }
        for key, changed in maml_only.items():
            if changed:
                value = getattr(self, key)
                raise MamlError(
                    f"algorithm.{key}={value.value if isinstance(value, Enum) else value} is a MAML setting; "
                    f"method={self.method.value} adapts every parameter and computes its own meta-gradient: "
                    f"leave algorithm.{key} at its default"
                )


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
    linear = "linear"  # from lr to min_lr in equal steps (Reptile's annealed meta step size)


class ScheduleSpan(str, Enum):
    """What the schedule's progress counts."""

    iterations = "iterations"  # meta-steps out of ``iterations``: reproducible step for step
    max_time = "max_time"  # also the wall-clock budget: the schedule ends at the budget if that comes first


@dataclass
class OptimizerConfig:
    """The outer (meta) optimiser: any of ``torch.optim``'s common ones, a schedule and clipping."""

    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3  # β
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd / rmsprop only
    schedule: Schedule = Schedule.constant
    min_lr: float = 1e-5  # end of the cosine and linear schedules
    span: ScheduleSpan = ScheduleSpan.iterations  # max_time: progress = max(step / iterations, time / max_time)
    clip_grad_norm: float | None = None  # meta-gradient norm clipping

    def __post_init__(self) -> None:
        self.name = _enum(OptimizerName, self.name, "optimizer.name")
        self.schedule = _enum(Schedule, self.schedule, "optimizer.schedule")
        self.span = _enum(ScheduleSpan, self.span, "optimizer.span")
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
