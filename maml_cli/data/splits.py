"""Deterministic, disjoint train/val/test partitions of classes (names are sorted before any shuffle).

Omniglot, 1623 characters (ids ``<archive>/<alphabet>/<character>``) of 50 alphabets:

- ``maml``: all characters sorted by ``<alphabet>/<character>``, shuffled with ``random.Random(split_seed)``
  (as the MAML code does, with seed 1): the first 1100 train, the next 100 val, the other 423 test.
- ``lake``: the 30 background alphabets (964 characters) train, except ``LAKE_VAL_ALPHABETS`` = 5 whole
  alphabets drawn with ``split_seed`` for val (for split_seed=1: 804 train, 160 val); the 20 evaluation
  alphabets (659 characters) test.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from maml_cli.errors import MamlError

MAML_SIZES = (1100, 100)  # train, val; the rest is test
LAKE_VAL_ALPHABETS = 5
SPLITS = ("train", "val", "test")


def partition(keys: Sequence[str], sizes: Sequence[int], seed: int) -> list[list[int]]:
    """Indices of ``keys``, sorted by key, shuffled with ``random.Random(seed)``, cut into consecutive
    groups of ``sizes``, plus a last group of the rest."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    random.Random(seed).shuffle(order)
    bounds = [0, *itertools.accumulate(sizes), len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:])]


def omniglot_split(classes: Sequence[str], kind: str, seed: int) -> dict[str, list[int]]:
    """Indices of ``classes`` (ids ``<archive>/<alphabet>/<character>``) per split, for split ``kind``."""
    if kind == "maml":
        if len(classes) <= sum(MAML_SIZES):
            raise MamlError(
                f"the maml split needs more than {sum(MAML_SIZES)} Omniglot characters, found {len(classes)}"
            )
        return dict(zip(SPLITS, partition([c.split("/", 1)[1] for c in classes], MAML_SIZES, seed)))
    if kind == "lake":
        archive, alphabet = zip(*(c.split("/")[:2] for c in classes))
        background = sorted({a for r, a in zip(archive, alphabet) if r == "images_background"})
        random.Random(seed).shuffle(background)
        val = set(background[:LAKE_VAL_ALPHABETS])
        groups = {"train": [], "val": [], "test": []}
        for i, (r, a) in enumerate(zip(archive, alphabet)):
            groups["test" if r != "images_background" else "val" if a in val else "train"].append(i)
        return groups
    raise MamlError(f"unknown Omniglot split {kind!r}; choose maml or lake")


def ratio_split(classes: Sequence[str], ratios: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Indices of ``classes`` per split, in proportions ``ratios`` (train, val, test) of the classes."""
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise MamlError(
            f"split_ratios={list(ratios)} must be three non-negative fractions (train, val, test) summing to 1"
        )
    bounds = [round(len(classes) * r) for r in itertools.accumulate(ratios[:2])]
    return dict(zip(SPLITS, partition(classes, [bounds[0], bounds[1] - bounds[0]], seed)))
