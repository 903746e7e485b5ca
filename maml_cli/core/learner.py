"""MetaLearner: MAML and its family on any ``nn.Module``, through ``torch.func.functional_call``.

The meta-objective is the MAML paper's: the query loss of the adapted parameters θ'ᵢ, **averaged**
over the tasks of a meta-batch (the mean keeps the meta-learning rate independent of the meta-batch
size; the original code does the same). Second-order MAML differentiates through the inner
gradients; first-order MAML treats them as constants, so ∂θ'/∂θ = I. How the tasks run (one by one,
on threads or vectorised) is the engines' business (``maml_cli.core.engines``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from maml_cli.core.batchnorm import Buffers, StepBuffers
from maml_cli.core.config import AdaptScope, BatchNormPolicy, Engine, InnerLoopConfig
from maml_cli.core.engines import DROPOUT, choose_engine, draws_random_numbers, map_tasks, meta_gradients
from maml_cli.core.inner_lr import InnerLearningRates
from maml_cli.core.nest import index, leaves, map_tensors
from maml_cli.core.tasks import TaskBatch
from maml_cli.errors import MamlError

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}
Params = dict[str, Tensor]


class MetaParameters(NamedTuple):
    """Tensors standing for a learner's meta-parameters, in its two parts."""

    model: Params  # the model's parameters, by name
    rates: Params  # the inner learning rates, by their names in ``InnerLearningRates``


@dataclass
class StepStats:
    """What one meta-training step measured, as tensors (no host sync in the hot loop)."""

    loss: Tensor  # meta-loss (mean over tasks of the weighted query losses)
    query_loss: Tensor  # mean final-step query loss
    query_accuracy: Tensor | None  # mean final-step query accuracy (classification)
    support_losses: Tensor  # mean support loss before each inner step, shape [steps]


@dataclass
class AdaptationCurve:
    """Query loss and accuracy of each task after 0..k inner steps, shapes ``[tasks, k+1]``."""

    losses: Tensor
    accuracies: Tensor | None


class MetaLearner(nn.Module):
    """Meta-learns the initialisation of ``model`` (plus, optionally, its inner learning rates).

    Use ``meta_backward`` on a meta-batch, then step any ``torch.optim`` optimiser over
    ``parameters()``; ``evaluate`` adapts held-out tasks and returns their adaptation curves.
    ``inner`` is the configuration: with ``learn_lr``, ``inner.lr`` is only the rates' initial value,
    and ``inner_lr(step, name)`` gives the one in use.

    Args:
        model: Any module; its trainable parameters are meta-learned.
        loss: ``"cross_entropy"`` (classification: accuracies are reported), ``"mse"`` or a function
            ``loss(outputs, targets)``.
        inner: The inner loop and the MAML-family variant (defaults: ``InnerLoopConfig()``).
        head: With ``adapt=head``, the child module that adapts (default: the last one with parameters).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | LossFn = "cross_entropy",
        inner: InnerLoopConfig | None = None,
        head: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.inner = inner or InnerLoopConfig()
        self.classification = loss == "cross_entropy"
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise MamlError(f"loss={loss!r} is not known; choose one of: {', '.join(LOSSES)}")
            loss = LOSSES[loss]
        self.loss_fn = loss
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if self.inner.adapt is AdaptScope.head:
            prefix = (head or _last_child_with_parameters(model)) + "."
            trainable = {n: p for n, p in trainable.items() if n.startswith(prefix)}
        if not trainable:
            raise MamlError("the model has no trainable parameters to adapt in the inner loop")
        self.adapted_names = tuple(trainable)
        self._random_model = draws_random_numbers(model)  # found once: engine_for runs on every meta-step
        self.inner_lr = InnerLearningRates(
            trainable,
            self.inner.lr,
            self.inner.steps,
            self.inner.lr_granularity,
            self.inner.lr_per_step,
            self.inner.learn_lr,
        )
        per_step = self.inner.batchnorm is BatchNormPolicy.per_step
        self.step_buffers = StepBuffers(model, self.inner.steps + 1 if per_step else 0)

    # ------------------------------------------------------------------ meta-training
    def meta_backward(self, batch: TaskBatch, iteration: int = 0) -> StepStats:
        """Accumulate the meta-gradient of the mean query loss over ``batch`` into ``.grad``.

        Args:
            batch: The meta-batch.
            iteration: The meta-training iteration (for the annealed variants).

        Returns:
            The step's losses (and accuracy), as tensors.
        """
        self.model.train()
        first_order = self.inner.first_order or iteration < self.inner.first_order_iterations
        meta, consts = self._meta_parameters()
        engine = self.engine_for(batch)
        task_loss = partial(
            MetaLearner._task_loss,
            consts=consts,
            steps=self.inner.steps,
            first_order=first_order,
            weights=self.multi_step_weights(iteration),
            functional=engine is Engine.vmap,
        )
        grads, aux = meta_gradients(engine, self, task_loss, meta, self._task_buffers(len(batch)), *batch.tensors())
        for p, g in zip(leaves(meta), grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        self.step_buffers.store(aux.pop("buffers"))
        return StepStats(
            loss=aux["loss"].mean(),
            query_loss=aux["query_loss"].mean(),
            query_accuracy=aux["query_accuracy"].mean() if self.classification else None,
            support_losses=aux["support_losses"].mean(0),
        )

    def multi_step_weights(self, iteration: int) -> Tensor | None:
        """MAML++'s multi-step loss weights for the query loss after each inner step.

        Uniform at iteration 0, annealed linearly so that after ``multi_step_loss_iterations`` only
        the final step counts (then ``None``: plain MAML). Non-final weights never drop below 0.03/k.

        Args:
            iteration: The meta-training iteration.

        Returns:
            The weights of steps 1..k (float64), or ``None``.
        """
        steps, span = self.inner.steps, self.inner.multi_step_loss_iterations
        if span == 0 or steps < 2 or iteration >= span:
            return None
        uniform, floor = 1.0 / steps, 0.03 / steps
        early = uniform - (uniform - floor) * iteration / span
        weights = torch.full((steps,), early, dtype=torch.float64)  # exact for float64 models
        weights[-1] = 1.0 - early * (steps - 1)
        return weights

    def engine_for(self, batch: TaskBatch) -> Engine:
        """The engine that runs the tasks of ``batch`` (see :func:`~maml_cli.core.engines.choose_engine`).

        Args:
            batch: The tasks to run.

        Returns:
            The configured engine, or the one ``auto`` picks for ``batch`` and this model.
        """
        return choose_engine(self.inner.engine, batch, self._random_model)

    # ------------------------------------------------------------------ evaluation / deployment
    def evaluate(self, batch: TaskBatch, steps: int | None = None, lr: float | None = None) -> AdaptationCurve:
        """Adapt every task of ``batch`` for ``steps`` and record the curve.

        Tasks go in chunks of ``eval_chunk``. With ``engine=auto`` a chunk's adaptation is vectorised
        (vmap): support sets are small, so one batched pass beats many tiny ones; the query passes after
        each step are vectorised on CUDA and run task by task on CPU threads (batched query activations
        outgrow the cache). Any other engine does both its way. Dropout is off (the curve is
        deterministic); BatchNorm follows the ``batchnorm`` policy. Meta-parameters, BatchNorm
        statistics and the modules' modes are left untouched.

        Args:
            batch: The tasks.
            steps: Inner steps (default ``eval_steps``).
            lr: A fixed scalar α instead of the learner's rates.

        Returns:
            Each task's query loss (and accuracy) after 0..steps inner steps.
        """
        steps = self.inner.eval_steps if steps is None else steps
        adapting = Engine.vmap if self.inner.engine is Engine.auto else self.inner.engine
        scoring = self.engine_for(batch)
        with self._evaluation_modes():
            tensors = map_tensors(Tensor.detach, self._all_parameters())
            frozen = {n: t for n, t in tensors.model.items() if n not in self.adapted_names}
            adapt = partial(
                MetaLearner._task_path, tensors=tensors, steps=steps, lr=lr, functional=adapting is Engine.vmap
            )
            score = partial(MetaLearner._task_scores, frozen=frozen)
            curves = []
            for chunk in batch.chunks(self.inner.eval_chunk):
                path, buffers = map_tasks(
                    adapting, self, adapt, self._task_buffers(len(chunk)), chunk.x_support, chunk.y_support
                )
                curves.append(map_tasks(scoring, self, score, path, buffers, chunk.x_query, chunk.y_query))
        losses = torch.cat([c[0] for c in curves])
        return AdaptationCurve(losses, torch.cat([c[1] for c in curves]) if self.classification else None)

    def adapt(self, x_support: Tensor, y_support: Tensor, steps: int | None = None, lr: float | None = None) -> Params:
        """Adapted parameters for one task's support set (deployment); use them with ``predict``.

        Args:
            x_support: The task's support inputs.
            y_support: Their labels or targets.
            steps: Inner steps (default ``eval_steps``).
            lr: A fixed scalar α instead of the learner's rates.

        Returns:
            The model's parameters after the inner steps, by name (detached).
        """
        steps = self.inner.eval_steps if steps is None else steps
        with self._evaluation_modes(), torch.enable_grad():
            buffers = index(self._task_buffers(1), 0)
            tensors = map_tensors(Tensor.detach, self._all_parameters())
            path, _, _ = self._adapt(tensors, buffers, x_support, y_support, steps, True, lr, functional=False)
        return {n: p.detach() for n, p in path[-1].items()}

    @torch.no_grad()
    def predict(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        """Model outputs for ``x`` under ``params`` adapted for ``step`` inner steps.

        Args:
            params: Adapted parameters (from ``adapt``).
            x: The inputs.
            step: The number of inner steps ``params`` were adapted for (default ``eval_steps``): it
                picks the per-step BatchNorm statistics.

        Returns:
            The model's outputs.
        """
        step = self.inner.eval_steps if step is None else step
        with self._evaluation_modes():
            return self._forward(params, index(self._task_buffers(1), 0), step, x)[0]

    # ------------------------------------------------------------------ one task, functionally
    def _task_loss(
        self,
        meta: MetaParameters,
        buffers: list[Buffers],
        x_s: Tensor,
        y_s: Tensor,
        x_q: Tensor,
        y_q: Tensor,
        *,
        consts: MetaParameters,
        steps: int,
        first_order: bool,
        weights: Tensor | None,
        functional: bool,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Meta-loss of one task and what to log, as a pure function of the meta-parameters."""
        tensors = MetaParameters({**consts.model, **meta.model}, {**consts.rates, **meta.rates})
        path, support_losses, buffers = self._adapt(
            tensors, buffers, x_s, y_s, steps, first_order, functional=functional
        )
        scored = [steps] if weights is None else range(1, steps + 1)
        outputs = {}
        for s in scored:
            outputs[s], buffers = self._forward(path[s], buffers, s, x_q)
        losses = {s: self.loss_fn(out, y_q) for s, out in outputs.items()}
        if weights is None:
            loss = losses[steps]
        else:
            loss = sum(w * losses[s] for w, s in zip(weights.tolist(), scored))
        aux = {
            "loss": loss.detach(),
            "query_loss": losses[steps].detach(),
            "support_losses": torch.stack(support_losses) if support_losses else loss.new_zeros(0).detach(),
            "buffers": buffers,  # the running statistics after this task (stored by the per_step policy)
        }
        if self.classification:
            aux["query_accuracy"] = _accuracy(outputs[steps], y_q)
        return loss, aux

    def _task_path(
        self,
        buffers: list[Buffers],
        x_s: Tensor,
        y_s: Tensor,
        *,
        tensors: MetaParameters,
        steps: int,
        lr: float | None,
        functional: bool,
    ) -> tuple[list[Params], list[Buffers]]:
        """One task's adapted parameters after 0..steps inner steps (no meta-gradient), and its buffers."""
        path, _, buffers = self._adapt(tensors, buffers, x_s, y_s, steps, True, lr, functional)
        return [{n: params[n].detach() for n in self.adapted_names} for params in path], buffers

    @torch.no_grad()
    def _task_scores(
        self, path: list[Params], buffers: list[Buffers], x_q: Tensor, y_q: Tensor, *, frozen: Params
    ) -> tuple[Tensor, Tensor]:
        """Query loss and accuracy of one task under each step's parameters of ``path``."""
        losses, accuracies = [], []
        for step, adapted in enumerate(path):
            out, _ = self._forward({**frozen, **adapted}, buffers, step, x_q)
            losses.append(self.loss_fn(out, y_q))
            accuracies.append(_accuracy(out, y_q) if self.classification else losses[-1])
        return torch.stack(losses), torch.stack(accuracies)

    def _adapt(
        self,
        tensors: MetaParameters,
        buffers: list[Buffers],
        x_s: Tensor,
        y_s: Tensor,
        steps: int,
        first_order: bool,
        lr: float | None = None,
        functional: bool = True,
    ) -> tuple[list[Params], list[Tensor], list[Buffers]]:
        """θ → θ − α ∇θ L_support, ``steps`` times; returns [θ₀, …, θ_k], the support losses and the buffers.

        First-order: the inner gradient is computed on detached parameters, so it is a constant
        and no second-order graph is ever built. ``functional``: inner gradients by ``torch.func``
        (required under vmap), else by ``torch.autograd`` (less overhead per task).
        """
        params = tensors.model
        path, support_losses = [params], []
        for step in range(steps):
            frozen = {n: t.detach() for n, t in params.items()} if first_order else params
            adapted = {n: frozen[n] for n in self.adapted_names}

            def support_loss(
                sub: Params, frozen: Params = frozen, step: int = step, buffers: list[Buffers] = buffers
            ) -> tuple[Tensor, list[Buffers]]:
                out, buffers = self._forward({**frozen, **sub}, buffers, step, x_s)
                return self.loss_fn(out, y_s), buffers

            grads, (value, buffers) = _grad_and_value(support_loss, adapted, not first_order, functional)
            params = dict(params)
            for n in self.adapted_names:
                alpha = lr if lr is not None else self.inner_lr.rate(tensors.rates, step, n)
                params[n] = params[n] - alpha * grads[n]
            path.append(params)
            support_losses.append(value.detach())
        return path, support_losses, buffers

    def _forward(self, params: Params, buffers: list[Buffers], step: int, x: Tensor) -> tuple[Tensor, list[Buffers]]:
        """Model outputs for ``x`` at inner step ``step``, and the buffer sets after the call.

        Buffers are threaded functionally: in training mode BatchNorm updates its running
        statistics in place, so it is given fresh copies of the step's buffers, returned in a new
        list. torch.func's transforms forbid in-place updates of tensors captured from outside.
        """
        current = min(step, len(buffers) - 1)
        state = buffers[current]
        if not self.model.training:
            out: Tensor = functional_call(self.model, (params, state), (x,))
            return out, buffers
        state = {n: t.clone() for n, t in state.items()}
        out = functional_call(self.model, (params, state), (x,))
        buffers = list(buffers)
        buffers[current] = {n: t.detach() for n, t in state.items()}
        return out, buffers

    # ------------------------------------------------------------------ parameters and buffers
    def _all_parameters(self) -> MetaParameters:
        return MetaParameters(dict(self.model.named_parameters()), dict(self.inner_lr.named_parameters()))

    def _meta_parameters(self) -> tuple[MetaParameters, MetaParameters]:
        """(meta-parameters, constants): the trainable parameters of the model and rates, and the frozen ones."""
        parts = self._all_parameters()
        meta = MetaParameters(*({n: p for n, p in part.items() if p.requires_grad} for part in parts))
        consts = MetaParameters(*({n: p for n, p in part.items() if not p.requires_grad} for part in parts))
        return meta, consts

    def _task_buffers(self, tasks: int) -> list[Buffers]:
        """Per-task copies of the buffers, so that no task's statistics leak into another's."""
        sets = self.step_buffers.as_dicts() or [dict(self.model.named_buffers())]
        return [{n: t.detach().expand(tasks, *t.shape).clone() for n, t in s.items()} for s in sets]

    @contextmanager
    def _evaluation_modes(self) -> Iterator[None]:
        """The model's modes for evaluation, restored afterwards: dropout off, so that results are deterministic;
        BatchNorm per its policy: per-step running statistics (eval mode) or, transductive, the batch's (train mode)."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.train(self.inner.batchnorm is not BatchNormPolicy.per_step)
        for m in self.model.modules():
            if isinstance(m, DROPOUT):
                m.eval()
        try:
            yield
        finally:
            for m, training in modes:
                m.training = training


def _grad_and_value(
    fn: Callable[[Params], tuple[Tensor, Any]], inputs: Params, create_graph: bool, functional: bool
) -> tuple[Params, tuple[Tensor, Any]]:
    """``(∇ fn(inputs)[0], fn(inputs))`` for ``fn`` returning ``(loss, aux)``; zeros for unused inputs.

    ``functional``: by ``torch.func.grad_and_value`` (composes with vmap; higher orders implicit), else by
    ``torch.autograd.grad``, keeping the graph for second order when ``create_graph``.
    """
    if functional:
        result: tuple[Params, tuple[Tensor, Any]] = grad_and_value(fn, has_aux=True)(inputs)
        return result
    variables = inputs if create_graph else {n: t.detach().requires_grad_() for n, t in inputs.items()}
    with torch.enable_grad():
        value, aux = fn(variables)
        grads = torch.autograd.grad(
            value, tuple(variables.values()), create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    return dict(zip(variables, grads)), (value, aux)


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(-1) == labels).float().mean()


def _last_child_with_parameters(model: nn.Module) -> str:
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise MamlError("adapt=head needs a model whose last child module holds the head's parameters")
    return names[-1]
