"""MetaLearner: MAML and its family on any ``nn.Module``, through ``torch.func.functional_call``.

The meta-objective is the MAML paper's: the query loss of the adapted parameters θ'ᵢ, **averaged**
over the tasks of a meta-batch (the mean keeps the meta-learning rate independent of the meta-batch
size; the original code does the same). Second-order MAML differentiates through the inner
gradients; first-order MAML treats them as constants, so ∂θ'/∂θ = I.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from maml_cli.core.config import AdaptScope, BatchNormPolicy, Engine, InnerLoopConfig
from maml_cli.core.inner_lr import InnerLearningRates
from maml_cli.core.threads import map_task_slices
from maml_cli.data.tasks import TaskBatch
from maml_cli.errors import MamlError

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}
Params = dict[str, Tensor]
THREADED_TASK_VALUES = 2**17  # engine=auto on CPU threads tasks whose inputs hold at most this many values
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass
class StepStats:
    """What one meta-training step measured, as tensors (no host sync in the hot loop)."""

    loss: Tensor  # meta-loss (mean over tasks of the weighted query losses)
    query_loss: Tensor  # mean final-step query loss
    query_accuracy: Optional[Tensor]  # mean final-step query accuracy (classification)
    support_losses: Tensor  # mean support loss before each inner step, shape [steps]


@dataclass
class AdaptationCurve:
    """Query loss and accuracy of each task after 0..k inner steps, shapes ``[tasks, k+1]``."""

    losses: Tensor
    accuracies: Optional[Tensor]


class MetaLearner(nn.Module):
    """Meta-learns the initialisation of ``model`` (plus, optionally, its inner learning rates).

    Use ``meta_backward`` on a meta-batch, then step any ``torch.optim`` optimiser over
    ``parameters()``; ``evaluate`` adapts held-out tasks and returns their adaptation curves.
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
        # Threads draw from one random generator in no fixed order: models that draw stay reproducible in a loop.
        self._draws_random_numbers = any(isinstance(m, _DROPOUT) for m in model.modules())
        self.inner_lr = InnerLearningRates(
            trainable,
            self.inner.lr,
            self.inner.steps,
            self.inner.lr_granularity,
            self.inner.lr_per_step,
            self.inner.learn_lr,
        )
        self.step_buffers = nn.ModuleList()
        if self.inner.batchnorm is BatchNormPolicy.per_step:
            if not any(getattr(m, "track_running_stats", False) for m in model.modules()):
                raise MamlError("batchnorm=per_step needs BatchNorm layers with track_running_stats=True")
            self.step_buffers.extend(_BufferSet(dict(model.named_buffers())) for _ in range(self.inner.steps + 1))

    # ------------------------------------------------------------------ meta-training
    def meta_backward(self, batch: TaskBatch, iteration: int = 0) -> StepStats:
        """Accumulate the meta-gradient of the mean query loss over ``batch`` into ``.grad``."""
        self.model.train()
        first_order = self.inner.first_order or iteration < self.inner.first_order_iterations
        weights = self.multi_step_weights(iteration)
        meta, consts = self._split_parameters()
        engine = self._engine(batch)
        task = dict(consts=consts, steps=self.inner.steps, first_order=first_order, weights=weights,
                    functional=engine is Engine.vmap)
        buffers = self._task_buffers(len(batch))
        if engine is Engine.vmap:
            # torch.func.grad differentiates its own inputs: given the parameters themselves, it would
            # also record an outer autograd graph, and the gradients would hold it (and leak through it).
            detached = {n: p.detach() for n, p in meta.items()}
            grads, aux = vmap(grad(partial(self._task_loss, **task), has_aux=True), in_dims=(None, 0, 0, 0, 0, 0),
                              randomness="different")(detached, buffers, *_fields(batch))
            grads = {n: g.mean(0) for n, g in grads.items()}
        else:
            sum_slice = partial(MetaLearner._meta_gradient_sum, meta=meta, tasks=(buffers, *_fields(batch)), **task)
            parts = map_task_slices(self, sum_slice, len(batch), _workers(engine))
            grads = _sum([sums for sums, _ in parts])
            aux = _stack([a for _, auxes in parts for a in auxes])
        for name, g in grads.items():
            p = meta[name]
            p.grad = g if p.grad is None else p.grad + g
        self._store_step_buffers(aux.pop("buffers"))
        return StepStats(
            loss=aux["loss"].mean(),
            query_loss=aux["query_loss"].mean(),
            query_accuracy=aux["query_accuracy"].mean() if self.classification else None,
            support_losses=aux["support_losses"].mean(0),
        )

    def multi_step_weights(self, iteration: int) -> Optional[Tensor]:
        """MAML++'s multi-step loss weights for the query loss after each inner step.

        Uniform at iteration 0, annealed linearly so that after ``multi_step_loss_iterations`` only
        the final step counts (then ``None``: plain MAML). Non-final weights never drop below 0.03/k.
        """
        steps, span = self.inner.steps, self.inner.multi_step_loss_iterations
        if span == 0 or steps < 2 or iteration >= span:
            return None
        uniform, floor = 1.0 / steps, 0.03 / steps
        early = uniform - (uniform - floor) * iteration / span
        weights = torch.full((steps,), early, dtype=torch.float64)  # exact for float64 models
        weights[-1] = 1.0 - early * (steps - 1)
        return weights

    # ------------------------------------------------------------------ evaluation / deployment
    def evaluate(self, batch: TaskBatch, steps: int | None = None, lr: float | None = None) -> AdaptationCurve:
        """Adapt every task of ``batch`` for ``steps`` (default ``eval_steps``) and record the curve.

        Tasks go in chunks of ``eval_chunk``. With ``engine=auto`` a chunk's adaptation is vectorised
        (vmap): support sets are small, so one batched pass beats many tiny ones; the query passes after
        each step are vectorised on CUDA and run task by task on CPU threads (batched query activations
        outgrow the cache). Any other engine does both its way. ``lr`` overrides α with a fixed scalar.
        Dropout is off (the curve is deterministic); BatchNorm follows the ``batchnorm`` policy.
        Meta-parameters, BatchNorm statistics and the modules' modes are left untouched.
        """
        steps = self.inner.eval_steps if steps is None else steps
        adapting = Engine.vmap if self.inner.engine is Engine.auto else self.inner.engine
        scoring = self._engine(batch)
        with self._evaluation_modes():
            tensors = self._detached_tensors()
            frozen = {n: t for n, t in _part(tensors, "model.").items() if n not in self.adapted_names}
            adapt = partial(MetaLearner._task_path, tensors=tensors, steps=steps, lr=lr,
                            functional=adapting is Engine.vmap)
            score = partial(MetaLearner._task_scores, frozen=frozen)
            curves = []
            for chunk in batch.chunks(self.inner.eval_chunk):
                path, buffers = self._map_tasks(adapt, adapting, self._task_buffers(len(chunk)), chunk.x_support,
                                                chunk.y_support)
                curves.append(self._map_tasks(score, scoring, path, buffers, chunk.x_query, chunk.y_query))
        losses = torch.cat([c[0] for c in curves])
        return AdaptationCurve(losses, torch.cat([c[1] for c in curves]) if self.classification else None)

    def adapt(self, x_support: Tensor, y_support: Tensor, steps: int | None = None, lr: float | None = None) -> Params:
        """Adapted parameters for one task's support set (deployment); use them with ``predict``."""
        steps = self.inner.eval_steps if steps is None else steps
        with self._evaluation_modes(), torch.enable_grad():
            buffers = _index(self._task_buffers(1), 0)
            tensors = self._detached_tensors()
            path, _, _ = self._adapt(tensors, buffers, x_support, y_support, steps, True, lr, functional=False)
        return {n: p.detach() for n, p in path[-1].items()}

    @torch.no_grad()
    def predict(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        """Model outputs for ``x`` under ``params`` adapted for ``step`` inner steps (from ``adapt``)."""
        step = self.inner.eval_steps if step is None else step
        with self._evaluation_modes():
            return self._forward(params, _index(self._task_buffers(1), 0), step, x)[0]

    # ------------------------------------------------------------------ one task, functionally
    def _task_loss(self, meta: Params, buffers, x_s, y_s, x_q, y_q, *, consts, steps, first_order, weights,
                   functional):
        """Meta-loss of one task and what to log, as a pure function of the meta-parameters."""
        tensors = {**consts, **meta}
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

    def _meta_gradient_sum(self, indices: range, *, meta: Params, tasks, **task) -> tuple[Params, list]:
        """Σ over the tasks ``indices`` of ``tasks`` of their meta-gradients (of loss / number of tasks), and
        their logs; parameters no task used get no entry (as ``.backward`` leaves their ``.grad`` unset)."""
        names, count = list(meta), next(_leaves(tasks)).shape[0]
        sums, auxes = {}, []
        for i in indices:
            loss, aux = self._task_loss(meta, *_index(tasks, i), **task)
            grads = torch.autograd.grad(loss / count, [meta[n] for n in names], allow_unused=True)
            sums = _sum([sums, {n: g for n, g in zip(names, grads) if g is not None}])
            auxes.append(aux)
        return sums, auxes

    def _task_path(self, buffers, x_s, y_s, *, tensors, steps, lr, functional):
        """One task's adapted parameters after 0..steps inner steps (no meta-gradient), and its buffers."""
        path, _, buffers = self._adapt(tensors, buffers, x_s, y_s, steps, True, lr, functional)
        return [{n: params[n].detach() for n in self.adapted_names} for params in path], buffers

    @torch.no_grad()
    def _task_scores(self, path, buffers, x_q, y_q, *, frozen):
        """Query loss and accuracy of one task under each step's parameters of ``path``."""
        losses, accuracies = [], []
        for step, adapted in enumerate(path):
            out, _ = self._forward({**frozen, **adapted}, buffers, step, x_q)
            losses.append(self.loss_fn(out, y_q))
            accuracies.append(_accuracy(out, y_q) if self.classification else losses[-1])
        return torch.stack(losses), torch.stack(accuracies)

    def _adapt(self, tensors: Params, buffers, x_s, y_s, steps, first_order, lr=None, functional=True):
        """θ → θ − α ∇θ L_support, ``steps`` times; returns [θ₀, …, θ_k], the support losses and the buffers.

        First-order: the inner gradient is computed on detached parameters, so it is a constant
        and no second-order graph is ever built. ``functional``: inner gradients by ``torch.func``
        (required under vmap), else by ``torch.autograd`` (less overhead per task).
        """
        params, rates = _part(tensors, "model."), _part(tensors, "inner_lr.")
        path, support_losses = [params], []
        for step in range(steps):
            frozen = {n: t.detach() for n, t in params.items()} if first_order else params
            adapted = {n: frozen[n] for n in self.adapted_names}

            def support_loss(sub: Params, frozen=frozen, step=step, buffers=buffers):
                out, buffers = self._forward({**frozen, **sub}, buffers, step, x_s)
                return self.loss_fn(out, y_s), buffers

            grads, (value, buffers) = _grad_and_value(support_loss, adapted, not first_order, functional)
            params = dict(params)
            for n in self.adapted_names:
                alpha = lr if lr is not None else self.inner_lr.lookup(rates, step, n)
                params[n] = params[n] - alpha * grads[n]
            path.append(params)
            support_losses.append(value.detach())
        return path, support_losses, buffers

    def _forward(self, params: Params, buffers: list, step: int, x: Tensor) -> tuple[Tensor, list]:
        """Model outputs for ``x`` at inner step ``step``, and the buffer sets after the call.

        Buffers are threaded functionally: in training mode BatchNorm updates its running
        statistics in place, so it is given fresh copies of the step's buffers, returned in a new
        list. torch.func's transforms forbid in-place updates of tensors captured from outside.
        """
        index = min(step, len(buffers) - 1)
        state = buffers[index]
        if not self.model.training:
            return functional_call(self.model, (params, state), (x,)), buffers
        state = {n: t.clone() for n, t in state.items()}
        out = functional_call(self.model, (params, state), (x,))
        buffers = list(buffers)
        buffers[index] = {n: t.detach() for n, t in state.items()}
        return out, buffers

    # ------------------------------------------------------------------ parameters and buffers
    def _split_parameters(self) -> tuple[Params, Params]:
        """(meta-parameters, constants): trainable parameters and frozen ones (model and rates)."""
        meta, consts = {}, {}
        for name, p in self.named_parameters():
            (meta if p.requires_grad else consts)[name] = p
        return meta, consts

    def _detached_tensors(self) -> Params:
        return {n: p.detach() for n, p in self.named_parameters()}

    def _task_buffers(self, tasks: int):
        """Per-task copies of the buffers, so that no task's statistics leak into another's."""
        sets = [b.as_dict() for b in self.step_buffers] or [dict(self.model.named_buffers())]
        return [{n: t.detach().expand(tasks, *t.shape).clone() for n, t in s.items()} for s in sets]

    @torch.no_grad()
    def _store_step_buffers(self, buffers) -> None:
        """Per-step running statistics: the mean over tasks of each task's update (MAML++)."""
        for stored, updated in zip(self.step_buffers, buffers):
            for name, t in updated.items():
                if t.is_floating_point():  # averaged in at least float32 (half-precision buffers), float64 kept
                    stored.get(name).copy_(t.mean(0, dtype=torch.promote_types(t.dtype, torch.float32)))
                else:
                    stored.get(name).copy_(t[0])

    @contextmanager
    def _evaluation_modes(self):
        """The model's modes for evaluation, restored afterwards: dropout off, so that results are deterministic;
        BatchNorm per its policy: per-step running statistics (eval mode) or, transductive, the batch's (train mode)."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.train(self.inner.batchnorm is not BatchNormPolicy.per_step)
        for m in self.model.modules():
            if isinstance(m, _DROPOUT):
                m.eval()
        try:
            yield
        finally:
            for m, training in modes:
                m.training = training

    def _map_tasks(self, fn: Callable, engine: Engine, *tasks):
        """``fn(learner, *task_i)`` for every task ``i`` of the nest ``tasks``, stacked: vectorised by vmap, or
        task by task (on CPU threads with ``engine=threads``)."""
        if engine is Engine.vmap:
            return vmap(partial(fn, self), randomness="different")(*tasks)

        def run(learner: MetaLearner, indices: range) -> list:
            return [fn(learner, *_index(tasks, i)) for i in indices]

        parts = map_task_slices(self, run, next(_leaves(tasks)).shape[0], _workers(engine))
        return _stack([result for part in parts for result in part])

    def _engine(self, batch: TaskBatch) -> Engine:
        """The engine of meta-training (and of evaluation's query passes) for ``batch``."""
        if self.inner.engine is not Engine.auto:
            return self.inner.engine
        if batch.x_support.device.type != "cpu":
            return Engine.vmap
        # Large tasks keep both threads busy by themselves, and side by side they would double the memory.
        small = batch.x_support[0].numel() + batch.x_query[0].numel() <= THREADED_TASK_VALUES
        return Engine.threads if small and not self._draws_random_numbers else Engine.loop


class _BufferSet(nn.Module):
    """A copy of a model's buffers (one inner step's BatchNorm statistics)."""

    def __init__(self, buffers: dict[str, Tensor]) -> None:
        super().__init__()
        self.names = list(buffers)
        for name, t in buffers.items():
            self.register_buffer(name.replace(".", "__"), t.detach().clone())

    def get(self, name: str) -> Tensor:
        return getattr(self, name.replace(".", "__"))

    def as_dict(self) -> dict[str, Tensor]:
        return {n: self.get(n) for n in self.names}


def _fields(batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return batch.x_support, batch.y_support, batch.x_query, batch.y_query


def _part(tensors: Params, prefix: str) -> Params:
    return {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}


def _grad_and_value(fn: Callable, inputs: Params, create_graph: bool, functional: bool):
    """``(∇ fn(inputs)[0], fn(inputs))`` for ``fn`` returning ``(loss, aux)``; zeros for unused inputs.

    ``functional``: by ``torch.func.grad_and_value`` (composes with vmap; higher orders implicit), else by
    ``torch.autograd.grad``, keeping the graph for second order when ``create_graph``.
    """
    if functional:
        return grad_and_value(fn, has_aux=True)(inputs)
    leaves = inputs if create_graph else {n: t.detach().requires_grad_() for n, t in inputs.items()}
    with torch.enable_grad():
        value, aux = fn(leaves)
        grads = torch.autograd.grad(value, tuple(leaves.values()), create_graph=create_graph, allow_unused=True,
                                    materialize_grads=True)
    return dict(zip(leaves, grads)), (value, aux)


def _workers(engine: Engine) -> int:
    return torch.get_num_threads() if engine is Engine.threads else 1


def _sum(trees: list[Params]) -> Params:
    """Entry-wise sum of dicts of tensors, in list order (a key missing from a dict counts as zero)."""
    out: Params = {}
    for tree in trees:
        for name, t in tree.items():
            out[name] = t if name not in out else out[name] + t
    return out


def _leaves(tree):
    if isinstance(tree, Tensor):
        yield tree
    else:
        for value in tree.values() if isinstance(tree, dict) else tree:
            yield from _leaves(value)


def _index(tree, i: int):
    """Task ``i`` of a nest of dicts, lists and tuples of per-task tensors."""
    if isinstance(tree, Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {k: _index(v, i) for k, v in tree.items()}
    return type(tree)(_index(v, i) for v in tree)


def _stack(trees: list):
    """Per-task nests of the same structure → one nest of stacked tensors (the inverse of ``_index``)."""
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.stack(trees)
    if isinstance(first, dict):
        return {k: _stack([t[k] for t in trees]) for k in first}
    return type(first)(_stack(list(group)) for group in zip(*trees))


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(-1) == labels).float().mean()


def _last_child_with_parameters(model: nn.Module) -> str:
    names = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not names:
        raise MamlError("adapt=head needs a model whose last child module holds the head's parameters")
    return names[-1]
