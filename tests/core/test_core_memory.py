"""Meta-training does not leak: memory and live tensors stay flat over many meta-iterations."""

from __future__ import annotations

import gc
import os
import resource
import warnings

import pytest
import torch

from maml_cli.core import InnerLoopConfig, MetaLearner, OptimizerConfig, TaskBatch, build_optimizer
from maml_cli.models import Conv4
from tests.core.core_helpers import single_thread  # noqa: F401 (autouse fixture)

MiB = 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() pokes deprecated module attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _batch(g: torch.Generator, tasks=2, ways=3, shots=1, queries=2) -> TaskBatch:
    labels = lambda n: torch.arange(ways).repeat_interleave(n).expand(tasks, -1).clone()  # noqa: E731
    return TaskBatch(
        torch.randn(tasks, ways * shots, 1, 28, 28, generator=g),
        labels(shots),
        torch.randn(tasks, ways * queries, 1, 28, 28, generator=g),
        labels(queries),
    )


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_memory_and_live_tensors_do_not_grow_over_50_meta_iterations(engine):
    torch.manual_seed(0)
    maml = MetaLearner(
        Conv4(3, hidden=8, track_running_stats=True),
        inner=InnerLoopConfig(steps=1, lr=0.4, engine=engine, learn_lr=True, batchnorm="per_step"),
    )
    optimizer = build_optimizer(maml.parameters(), OptimizerConfig(lr=1e-3))
    g = torch.Generator().manual_seed(0)
    history = []

    def iterate(i):
        optimizer.zero_grad(set_to_none=True)
        stats = maml.meta_backward(_batch(g), iteration=i)
        optimizer.step()
        history.append(stats.loss.item())

    for i in range(10):  # warm-up: allocator pools, optimiser state, lazy initialisation
        iterate(i)
    tensors, rss, peak = _live_tensors(), _rss_bytes(), _peak_rss_bytes()
    for i in range(10, 50):
        iterate(i)
    assert _live_tensors() == tensors  # no graph or statistics retained across iterations
    assert _rss_bytes() - rss < 16 * MiB
    assert _peak_rss_bytes() - peak < 16 * MiB
    assert all(torch.isfinite(torch.tensor(history)))
