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
from torch.func import functional_call

from maml_cli.core import imaml, reptile
from maml_cli.core.autodiff import grad_and_value
from maml_cli.core.batchnorm import Buffers, StepBuffers, StepWeights, batchnorm_weight_names
from maml_cli.core.config import (
    AdaptScope,
    BatchNormPolicy,
    BatchNormWeights,
    Engine,
    InnerLoopConfig,
    InnerOptimizer,
    Method,
)
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
    step_weights: Params  # the per-step BatchNorm weights, by their names in ``StepWeights``


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
        if self.inner.batchnorm_weights is not BatchNormWeights.adapted:
            trainable = {n: p for n, p in trainable.items() if n not in _batchnorm_weights(model, self.inner)}
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
            self.inner.lr_init_range,
        )
        per_step = self.inner.batchnorm is BatchNormPolicy.per_step
        self.step_buffers = StepBuffers(model, self.inner.steps + 1 if per_step else 0)
        per_step_weights = self.inner.batchnorm_weights is BatchNormWeights.per_step
        self.step_weights = StepWeights(model, max(self.inner.steps, 1) if per_step_weights else 0)

    # ------------------------------------------------------------------ meta-training
    def meta_backward(self, batch: TaskBatch, iteration: int = 0) -> StepStats:
        """Accumulate the meta-gradient of the mean query loss over ``batch`` into ``.grad``.

        With ``method=reptile`` or ``imaml``, that method's meta-gradient instead (see ``_surrogate_loss``).

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
        tasks = [self._task_buffers(len(batch)), *batch.tensors()]
        if self.inner.method in TASK_DIRECTIONS:  # Reptile or iMAML: their meta-gradients, through the same engines
            direction, functional = TASK_DIRECTIONS[self.inner.method], engine is Engine.vmap
            task_loss = partial(MetaLearner._surrogate_loss, consts=consts, direction=direction, functional=functional)
            if self.inner.inner_batch is not None:
                examples = batch.x_support.shape[1] + batch.x_query.shape[1]
                size, device = self.inner.inner_batch, batch.x_support.device
                tasks.append(reptile.inner_batches(len(batch), examples, self.inner.steps, size, device))
        grads, aux = meta_gradients(engine, self, task_loss, meta, *tasks, random_model=self._random_model)
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
        """MAML++'s multi-step loss weights for the query loss after each inner step, as its code sets them.

        With ``k`` steps, ``N`` epochs of multi-step loss (``multi_step_loss_iterations`` over
        ``iterations_per_epoch``) and ``e`` the epoch: uniform (1/k) in epoch 0, then each epoch the
        non-final weights drop by 1/(kN) down to 0.03/k and the final one rises by (k−1)/(kN), up to
        1 − (k−1)·0.03/k (they always sum to 1). From iteration ``multi_step_loss_iterations`` on
        only the final step counts (then ``None``: plain MAML).

        Args:
            iteration: The meta-training iteration (0-based).

        Returns:
            The weights of steps 1..k (float64), or ``None``.
        """
        steps, span = self.inner.steps, self.inner.multi_step_loss_iterations
        if span == 0 or steps < 2 or iteration >= span:
            return None
        epoch, epochs = iteration // self.inner.iterations_per_epoch, span / self.inner.iterations_per_epoch
        decay, floor = 1.0 / steps / epochs, 0.03 / steps
        weights = torch.full((steps,), max(1.0 / steps - epoch * decay, floor), dtype=torch.float64)
        weights[-1] = min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
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
            score = partial(MetaLearner._task_scores, frozen=frozen, step_weights=tensors.step_weights)
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
                picks the per-step BatchNorm statistics and weights.

        Returns:
            The model's outputs.
        """
        step = self.inner.eval_steps if step is None else step
        with self._evaluation_modes():
            step_weights = self._all_parameters().step_weights
            return self._forward(params, step_weights, index(self._task_buffers(1), 0), step, x, query=True)[0]

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
        tensors = MetaParameters(*({**c, **m} for c, m in zip(consts, meta)))
        path, support_losses, buffers = self._adapt(
            tensors, buffers, x_s, y_s, steps, first_order, functional=functional
        )
        scored = [steps] if weights is None else range(1, steps + 1)
        outputs = {}
        for s in scored:
            outputs[s], buffers = self._forward(path[s], tensors.step_weights, buffers, s, x_q, query=True)
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

    def _surrogate_loss(
        self,
        meta: MetaParameters,
        buffers: list[Buffers],
        x_s: Tensor,
        y_s: Tensor,
        x_q: Tensor,
        y_q: Tensor,
        *batches: Tensor,
        consts: MetaParameters,
        direction: TaskDirection,
        functional: bool,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Reptile's or iMAML's task: ⟨θ, d⟩ for the method's meta-gradient d of the task, held constant, so that
        its gradient is d and the engines apply unchanged; the logs are those of ``_task_loss``."""
        tensors = map_tensors(Tensor.detach, MetaParameters(*({**c, **m} for c, m in zip(consts, meta))))
        task = (x_s, y_s, x_q, y_q, *batches)
        d, out, support_losses, buffers = direction(self, tensors, buffers, *task, functional=functional)
        query_loss = self.loss_fn(out, y_q).detach()
        aux = {
            "loss": query_loss,
            "query_loss": query_loss,
            "support_losses": torch.stack(support_losses) if support_losses else query_loss.new_zeros(0),
            "buffers": buffers,
        }
        if self.classification:
            aux["query_accuracy"] = _accuracy(out, y_q)
        return torch.stack([(meta.model[n] * g.detach()).sum() for n, g in d.items()]).sum(), aux

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
        self,
        path: list[Params],
        buffers: list[Buffers],
        x_q: Tensor,
        y_q: Tensor,
        *,
        frozen: Params,
        step_weights: Params,
    ) -> tuple[Tensor, Tensor]:
        """Query loss and accuracy of one task under each step's parameters of ``path``."""
        losses, accuracies = [], []
        for step, adapted in enumerate(path):
            out, _ = self._forward({**frozen, **adapted}, step_weights, buffers, step, x_q, query=True)
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
        batches: Tensor | None = None,
        keep_path: bool = True,
    ) -> tuple[list[Params], list[Tensor], list[Buffers]]:
        """θ → θ − α ∇θ L_support, ``steps`` times; returns [θ₀, …, θ_k], the support losses and the buffers.

        ``inner_optimizer=adam`` steps by Adam instead; iMAML adds its proximal term λ/2·‖θ' − θ₀‖² to the
        support loss (the support losses returned leave it out). ``batches`` (``[steps, size]`` indices) picks
        each step's examples. Without ``keep_path`` only [θ_k] is returned: memory does not grow with the steps.

        First-order: the inner gradient is computed on detached parameters (and per-step BatchNorm
        weights), so it is a constant and no second-order graph is ever built. ``functional``: inner
        gradients by ``torch.func`` (required under vmap), else by ``torch.autograd`` (less overhead per task).
        """
        params = tensors.model
        step_weights = map_tensors(Tensor.detach, tensors.step_weights) if first_order else tensors.step_weights
        lam = self.inner.lam if self.inner.method is Method.imaml else 0.0
        start = {n: params[n].detach() for n in self.adapted_names} if lam else {}  # iMAML's proximal centre
        moments: dict[str, tuple[Tensor, Tensor]] = {}  # Adam's
        path, support_losses = [params], []
        for step in range(steps):
            frozen = {n: t.detach() for n, t in params.items()} if first_order else params
            adapted = {n: frozen[n] for n in self.adapted_names}
            x, y = (x_s, y_s) if batches is None else (x_s[batches[step]], y_s[batches[step]])

            def support_loss(
                sub: Params,
                frozen: Params = frozen,
                step: int = step,
                buffers: list[Buffers] = buffers,
                x: Tensor = x,
                y: Tensor = y,
            ) -> tuple[Tensor, tuple[Tensor, list[Buffers]]]:
                out, buffers = self._forward({**frozen, **sub}, step_weights, buffers, step, x)
                loss = self.loss_fn(out, y)
                if not lam:
                    return loss, (loss, buffers)
                proximal = torch.stack([((sub[n] - start[n]) ** 2).sum() for n in sub]).sum()
                return loss + lam / 2 * proximal, (loss, buffers)

            grads, (_, (value, buffers)) = grad_and_value(support_loss, adapted, not first_order, functional)
            params = dict(params)
            for n in self.adapted_names:
                alpha = lr if lr is not None else self.inner_lr.rate(tensors.rates, step, n)
                update = grads[n]
                if self.inner.inner_optimizer is InnerOptimizer.adam:
                    update, moments[n] = reptile.adam_direction(grads[n], moments.get(n), step)
                params[n] = params[n] - alpha * update
            path = [*path, params] if keep_path else [params]
            support_losses.append(value.detach())
        return path, support_losses, buffers

    def _forward(
        self, params: Params, step_weights: Params, buffers: list[Buffers], step: int, x: Tensor, query: bool = False
    ) -> tuple[Tensor, list[Buffers]]:
        """Model outputs for ``x`` under ``params`` after ``step`` inner updates, and the buffer sets after the call.

        The running statistics are the set of ``step`` updates; the per-step BatchNorm weights those of
        the inner step the pass belongs to: ``step`` for a support pass, ``step − 1`` for a query pass
        (see ``StepWeights``). Buffers are threaded functionally: in training mode BatchNorm updates its
        running statistics in place, so it is given fresh copies of the step's buffers, returned in a new
        list. torch.func's transforms forbid in-place updates of tensors captured from outside.
        """
        params = self.step_weights.select(params, step_weights, step - 1 if query else step)
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
        return MetaParameters(
            dict(self.model.named_parameters()),
            dict(self.inner_lr.named_parameters()),
            dict(self.step_weights.named_parameters()),
        )

    def _meta_parameters(self) -> tuple[MetaParameters, MetaParameters]:
        """(meta-parameters, constants): the trainable parameters of each part, and the frozen ones."""
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


TaskDirection = Callable[..., tuple[Params, Tensor, list[Tensor], list[Buffers]]]
TASK_DIRECTIONS: dict[Method, TaskDirection] = {
    Method.reptile: reptile.task_direction,
    Method.imaml: imaml.task_direction,
}


def _batchnorm_weights(model: nn.Module, inner: InnerLoopConfig) -> list[str]:
    """The names of ``model``'s BatchNorm weights and biases, which ``inner.batchnorm_weights`` keeps out of the
    inner loop; MamlError if it has none."""
    names = batchnorm_weight_names(model)
    if not names:
        raise MamlError(
            f"batchnorm_weights={inner.batchnorm_weights.value} needs BatchNorm layers with trainable weights "
            "and biases; the model has none (use batchnorm_weights=adapted)"
        )
    return names


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(-1) == labels).float().mean()


def _last_child_with_parameters(model: nn.Module) -> str:
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise MamlError("adapt=head needs a model whose last child module holds the head's parameters")
    return names[-1]
