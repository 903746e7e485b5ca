"""Engines: how the tasks of a meta-batch run, and the choice between them.

``loop`` runs one task at a time, ``threads`` runs whole tasks side by side on CPU threads and ``vmap``
vectorises the tasks with ``torch.func.vmap``; all compute the same results. Threads pay off because a
meta-batch's per-task kernels are small (a 5-image support set, a 75-image query set), and two or more
intra-op threads share them poorly: whole tasks at once, each worker thread with one intra-op thread, keep
every core busy (torch releases the GIL inside its kernels and runs CPU backward passes on the calling
thread). On CPU ``vmap`` does the same with its chunks of tasks, where each thread's share is large enough.
Tasks are split into contiguous slices, one per worker, so that results (and their summation order) do not
depend on scheduling.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial, reduce
from operator import itemgetter
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from maml_cli.core.config import Engine
from maml_cli.core.nest import Nest, concat, index, leaves, map_tensors, stack
from maml_cli.core.tasks import TaskBatch

VECTORISED_TASK_VALUES = 2**14  # engine=auto on CPU vectorises tasks whose inputs hold at most this many values
THREADED_TASK_VALUES = 2**18  # ... and threads those that hold at most this many
VECTORISED_CHUNK_VALUES = 2**17  # on CPU, vmap meta-trains at most this many input values' tasks at once (memory)
THREADED_VMAP_VALUES = 2**14  # ... spread over the threads when each thread's share holds at least this many
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

Owner = TypeVar("Owner", bound=nn.Module)
Result = TypeVar("Result")
Gradients = list[Tensor | None]
_POOLS: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def draws_random_numbers(model: nn.Module) -> bool:
    """Whether ``model`` draws random numbers in training (it has dropout layers).

    Args:
        model: The network.

    Returns:
        True if any of its modules is a dropout layer.
    """
    return any(isinstance(m, DROPOUT) for m in model.modules())


def choose_engine(requested: Engine, batch: TaskBatch, random_model: bool) -> Engine:
    """The engine that runs the tasks of ``batch``: ``requested``, unless it is ``auto``.

    ``auto`` picks ``vmap`` on accelerators; on CPU, ``vmap`` for tiny tasks (a few images: one batched
    kernel beats many tiny ones, as on accelerators), ``threads`` for small ones, but ``loop`` for large
    ones (they keep the cores busy by themselves, and side by side they would double the memory) and for
    models with dropout (threads draw from one random generator in no fixed order; a loop keeps seeded
    runs reproducible).

    Args:
        requested: The configured engine.
        batch: The tasks to run.
        random_model: Whether the model draws random numbers (:func:`draws_random_numbers`).

    Returns:
        The engine to use.
    """
    if requested is not Engine.auto:
        return requested
    if batch.x_support.device.type != "cpu":
        return Engine.vmap
    values = _task_values(batch.tensors())
    if random_model or values > THREADED_TASK_VALUES:
        return Engine.loop
    return Engine.vmap if values <= VECTORISED_TASK_VALUES else Engine.threads


def map_tasks(engine: Engine, owner: Owner, fn: Callable[..., Nest], *tasks: Nest) -> Nest:
    """``fn(owner, *task_i)`` for every task ``i`` of the nests ``tasks``, stacked.

    Args:
        engine: ``vmap`` vectorises ``fn`` over the tasks; ``loop`` and ``threads`` call it task by task
            (``threads`` on CPU threads, each with a structural copy of ``owner``).
        owner: The module ``fn`` runs (a learner).
        fn: A function of the owner and one task's tensors.
        *tasks: Nests of per-task tensors (tasks along dim 0).

    Returns:
        The nest of the tasks' results, stacked along dim 0.
    """
    if engine is Engine.vmap:
        return vmap(partial(fn, owner), randomness="different")(*tasks)

    def run(worker: Owner, indices: range) -> list[Nest]:
        return [fn(worker, *index(tasks, i)) for i in indices]

    parts = _map_task_slices(owner, run, _count(tasks), _workers(engine, tasks, random_model=False))  # (no vmap here)
    return stack([result for part in parts for result in part])


def meta_gradients(
    engine: Engine,
    owner: Owner,
    task_loss: Callable[..., tuple[Tensor, Nest]],
    meta: Nest,
    *tasks: Nest,
    random_model: bool = False,
) -> tuple[Gradients, Nest]:
    """The gradient of the mean over tasks of ``task_loss(owner, meta, *task_i)`` w.r.t. each tensor of ``meta``.

    Args:
        engine: How the tasks run (see ``map_tasks``).
        owner: The module ``task_loss`` runs (a learner).
        task_loss: A function of the owner, the meta-parameters and one task's tensors: a scalar loss and
            what to log (a nest).
        meta: The meta-parameters (a nest of tensors that require gradients).
        *tasks: Nests of per-task tensors (tasks along dim 0).
        random_model: Whether the model draws random numbers (:func:`draws_random_numbers`): then ``vmap`` runs
            on one thread, so that seeded runs repeat.

    Returns:
        The gradients in the order of ``leaves(meta)`` (task by task, ``None`` for a tensor that no task used,
        as ``.backward`` leaves its ``.grad`` unset; ``vmap`` gives zeros), and the tasks' logs, stacked.
    """
    workers = _workers(engine, tasks, random_model)
    sum_slice = partial(_meta_gradient_sum, task_loss=task_loss, meta=meta, tasks=tasks)
    if engine is Engine.vmap:
        sum_slice = partial(_vectorised_gradient_sum, task_loss=task_loss, meta=meta, tasks=tasks, workers=workers)
    parts = _map_task_slices(owner, sum_slice, _count(tasks), workers)
    return reduce(_add, [sums for sums, _ in parts]), concat([logs for _, logs in parts])


def _vectorised_gradient_sum(
    owner: nn.Module,
    indices: range,
    *,
    task_loss: Callable[..., tuple[Tensor, Nest]],
    meta: Nest,
    tasks: tuple[Nest, ...],
    workers: int,
) -> tuple[Gradients, Nest]:
    """Σ over the tasks ``indices`` of their gradients of loss / number of tasks, vectorised in chunks of at most
    ``VECTORISED_CHUNK_VALUES / workers`` input values on CPU, and their logs, stacked."""
    # torch.func.grad differentiates its own inputs: given the parameters themselves, it would also
    # record an outer autograd graph, and the gradients would hold it (and leak through it).
    detached = map_tensors(Tensor.detach, meta)
    loss_grad = grad(partial(task_loss, owner), has_aux=True)
    batched = vmap(loss_grad, in_dims=(None, *(0,) * len(tasks)), randomness="different")
    sums: Gradients = [None] * len(list(leaves(meta)))
    logs, count = [], _count(tasks)
    for chunk in _vectorised_chunks(tasks, indices, workers):
        grads, aux = batched(detached, *map_tensors(itemgetter(chunk), tasks))
        sums = _add(sums, [g.sum(0) / count for g in leaves(grads)])
        logs.append(aux)
    return sums, concat(logs)


def _meta_gradient_sum(
    owner: nn.Module,
    indices: range,
    *,
    task_loss: Callable[..., tuple[Tensor, Nest]],
    meta: Nest,
    tasks: tuple[Nest, ...],
) -> tuple[Gradients, Nest]:
    """Σ over the tasks ``indices`` of their gradients of loss / number of tasks, and their logs, stacked."""
    params, count = list(leaves(meta)), _count(tasks)
    sums: Gradients = [None] * len(params)
    logs = []
    for i in indices:
        loss, aux = task_loss(owner, meta, *index(tasks, i))
        sums = _add(sums, torch.autograd.grad(loss / count, params, allow_unused=True))
        logs.append(aux)
    return sums, stack(logs)


def _add(total: Sequence[Tensor | None], more: Sequence[Tensor | None]) -> Gradients:
    """Entry-wise sum of two gradient lists, ``None`` counting as zero."""
    return [b if a is None else a if b is None else a + b for a, b in zip(total, more)]


def _vectorised_chunks(tasks: Nest, indices: range, workers: int) -> list[slice]:
    """The chunks of the tasks ``indices`` that vmap meta-trains at once: all of them on accelerators; on CPU,
    chunks of at most ``VECTORISED_CHUNK_VALUES`` input values across the ``workers``."""
    size = len(indices)
    if next(leaves(tasks)).device.type == "cpu":
        size = max(1, min(size, VECTORISED_CHUNK_VALUES // workers // max(1, _task_values(tasks))))
    return [slice(start, min(start + size, indices.stop)) for start in range(indices.start, indices.stop, size)]


def _task_values(tasks: Nest) -> int:
    """How many floating-point values one task of the nests ``tasks`` holds (its inputs, chiefly)."""
    return sum(t[0].numel() for t in leaves(tasks) if t.is_floating_point())


def _count(tasks: Nest) -> int:
    return next(leaves(tasks)).shape[0]


def _workers(engine: Engine, tasks: Nest, random_model: bool) -> int:
    """How many threads run the tasks: all intra-op threads for ``threads``, and for ``vmap`` on CPU where each
    thread's share of the tasks holds at least ``THREADED_VMAP_VALUES`` input values and the model draws no random
    numbers (threads would draw them in no fixed order); else one."""
    threads = torch.get_num_threads()
    if engine is Engine.threads:
        return threads
    if engine is not Engine.vmap or next(leaves(tasks)).device.type != "cpu":
        return 1
    share = _count(tasks) * _task_values(tasks) // threads
    return threads if share >= THREADED_VMAP_VALUES and not random_model else 1


def _map_task_slices(owner: Owner, fn: Callable[[Owner, range], Result], tasks: int, workers: int) -> list[Result]:
    """``[fn(owner_w, slice_w) for w in range(workers)]``, the tasks ``0..tasks-1`` split into contiguous slices.

    With one worker, ``fn(owner, range(tasks))`` runs in the calling thread. Otherwise each slice
    runs on its own thread with one intra-op thread and its own structural copy of ``owner`` (same
    tensors, separate modules: ``torch.func.functional_call`` swaps a module's attributes while it
    runs, so threads cannot share one). Gradient mode is enabled in the workers.
    """
    workers = max(1, min(workers, tasks))
    if workers == 1:
        return [fn(owner, range(tasks))]
    bounds = [tasks * w // workers for w in range(workers + 1)]
    owners = [owner] + [_share_tensors_copy(owner) for _ in range(workers - 1)]
    threads = torch.get_num_threads()
    pool = _POOLS.get(workers) or _POOLS.setdefault(workers, ThreadPoolExecutor(workers, "maml-task"))
    try:
        futures = [pool.submit(_in_worker, fn, o, range(bounds[w], bounds[w + 1])) for w, o in enumerate(owners)]
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)  # the workers' setting is also recorded process-wide: restore it


def _in_worker(fn: Callable[[Owner, range], Result], owner: Owner, indices: range) -> Result:
    torch.set_num_threads(1)
    with torch.enable_grad():
        return fn(owner, indices)


def _share_tensors_copy(module: Owner) -> Owner:
    """A deep copy of ``module``'s structure that shares its parameters and buffers."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)
