"""Who runs the workload: one meta-training step of maml-cli, of the reference loop, of higher or TorchOpt."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmarks.reference import LIBRARIES, CanonicalConv4
from benchmarks.workloads import inner_config, outer_lr, workload
from maml_cli.core import MetaLearner
from maml_cli.models import Conv4

IMPLS = (
    "maml_cli",
    "reference",
    "higher",
    "torchopt",
    "maml_cli-vmap",
    "maml_cli-loop",
    "maml_cli-threads",
    "maml_cli-graph",
)
DEFAULT_IMPLS = ("maml_cli", "reference", "higher", "torchopt")
THIRD_PARTY = ("higher", "torchopt")  # they run the reference's kernels: timed on fewer workloads and steps
ENGINES = ("maml_cli-vmap", "maml_cli-loop", "maml_cli-threads")  # maml_cli with one engine, not engine=auto


def available(impl: str, device: torch.device) -> tuple[bool, str]:
    """Whether ``impl`` runs here, and why not."""
    if impl == "maml_cli-graph":
        return (True, "") if device.type == "cuda" else (False, "CUDA graphs need --device cuda")
    if impl.startswith("maml_cli") or impl == "reference":
        return True, ""
    try:
        __import__(LIBRARIES[impl][0])
        return True, ""
    except Exception as error:  # not installed, or does not import against this torch
        return False, f"{type(error).__name__}: {error}".splitlines()[0][:160]


def make_learner(canonical: nn.Module, name: str, variant: str, engine: str = "auto") -> MetaLearner:
    """maml-cli's learner on the workload's Conv4, starting from ``canonical``'s weights."""
    w = workload(name)
    model = Conv4(w.ways, hidden=w.hidden, pooling=w.pooling).to(next(canonical.parameters()).dtype)
    model.load_state_dict(dict(zip(model.state_dict(), canonical.state_dict().values())))
    return MetaLearner(model, inner=inner_config(name, variant, engine))


def make_step(impl: str, name: str, variant: str, batch, device: torch.device) -> Callable[[], None]:
    """A callable doing one full meta-training step of ``impl`` (same initial weights for all)."""
    w = workload(name)
    torch.manual_seed(0)
    canonical = CanonicalConv4(w.ways, hidden=w.hidden, pooling=w.pooling)
    if impl.startswith("maml_cli"):
        engine = impl.removeprefix("maml_cli-") if impl in ENGINES else "auto"
        learner = make_learner(canonical, name, variant, engine).to(device)
        graph = impl == "maml_cli-graph"
        optimizer = torch.optim.Adam(learner.parameters(), outer_lr(name), capturable=graph)

        def step():
            optimizer.zero_grad(set_to_none=True)
            learner.meta_backward(batch)
            optimizer.step()

        return captured(step, optimizer) if graph else step
    canonical.to(device)
    optimizer = torch.optim.Adam(canonical.parameters(), outer_lr(name))
    meta_backward = LIBRARIES[impl][1]
    inner = inner_config(name, variant)

    def step():
        optimizer.zero_grad(set_to_none=True)
        meta_backward(canonical, *batch.tensors(), steps=inner.steps, lr=inner.lr, first_order=inner.first_order)
        optimizer.step()

    return step


def captured(step: Callable[[], None], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``step`` captured in a CUDA graph (after warm-up on a side stream); returns its replay.

    The capture runs ``step`` with the gradients unset, so the gradients it assigns live in the
    graph's memory pool and every replay rewrites them: the replay needs no ``zero_grad``.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    return graph.replay
