"""Nests: tensors in dicts, lists and tuples (named ones too), such as a task's inputs or a learner's parameters.

``torch.func`` maps over nests of the same kinds; these helpers do the same for the task-by-task engines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

Nest = Any  # a Tensor, or a dict, list or tuple of nests (typed loosely: its structure is the caller's)


def leaves(tree: Nest) -> Iterator[Tensor]:
    """The tensors of ``tree``, depth first, in order.

    Args:
        tree: A nest.

    Returns:
        An iterator over its tensors.
    """
    if isinstance(tree, Tensor):
        yield tree
    else:
        for value in tree.values() if isinstance(tree, dict) else tree:
            yield from leaves(value)


def map_tensors(fn: Callable[[Tensor], Any], tree: Nest) -> Nest:
    """A nest of the same structure as ``tree`` holding ``fn`` of each of its tensors.

    Args:
        fn: What to make of each tensor.
        tree: A nest.

    Returns:
        The new nest.
    """
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: map_tensors(fn, v) for k, v in tree.items()}
    return _like(tree, (map_tensors(fn, v) for v in tree))


def index(tree: Nest, i: int) -> Nest:
    """Task ``i`` of a nest of per-task tensors (stacked along dim 0).

    Args:
        tree: A nest whose tensors all have the tasks along dim 0.
        i: The task.

    Returns:
        The nest of that task's tensors.
    """
    return map_tensors(lambda t: t[i], tree)


def stack(trees: list[Nest]) -> Nest:
    """Per-task nests of one structure as one nest of stacked tensors (the inverse of ``index``).

    Args:
        trees: The tasks' nests, in order.

    Returns:
        A nest of that structure whose tensors hold the tasks along a new dim 0.
    """
    return _combine(torch.stack, trees)


def concat(trees: list[Nest]) -> Nest:
    """Nests of one structure, each holding some tasks along dim 0, as one nest of all the tasks in order.

    Args:
        trees: The nests, in order.

    Returns:
        A nest of that structure whose tensors are the concatenations along dim 0 (a single nest as it is).
    """
    return trees[0] if len(trees) == 1 else _combine(torch.cat, trees)


def _combine(join: Callable[[list[Tensor]], Tensor], trees: list[Nest]) -> Nest:
    first = trees[0]
    if isinstance(first, Tensor):
        return join(trees)
    if isinstance(first, dict):
        return {k: _combine(join, [t[k] for t in trees]) for k in first}
    return _like(first, (_combine(join, list(group)) for group in zip(*trees)))


def _like(tree: Nest, values: Iterable[Nest]) -> Nest:
    """A list or tuple (named or not) of the type of ``tree`` holding ``values``."""
    return type(tree)(*values) if hasattr(tree, "_fields") else type(tree)(values)
