"""Whole tasks side by side on CPU threads (the ``threads`` engine).

A meta-batch's per-task kernels are small (a 5-image support set, a 75-image query set), and two or
more intra-op threads share them poorly. Running whole tasks at once, each worker thread with one
intra-op thread, keeps every core busy: torch releases the GIL inside its kernels and runs CPU
backward passes on the calling thread. Tasks are split into contiguous slices, one per worker, so
results (and their summation order) do not depend on scheduling.
"""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import torch
from torch import nn

Result = TypeVar("Result")
_POOLS: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def map_task_slices(owner: nn.Module, fn: Callable[[nn.Module, range], Result], tasks: int, workers: int) -> list[Result]:
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


def _in_worker(fn: Callable, owner: nn.Module, indices: range):
    torch.set_num_threads(1)
    with torch.enable_grad():
        return fn(owner, indices)


def _share_tensors_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module``'s structure that shares its parameters and buffers."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)
