"""Memory of one meta-training step at 5, 20 and 50 inner steps: implicit MAML against second-order MAML.

iMAML's meta-gradient needs only where the inner loop ends (``maml_cli.core.imaml``): its memory does not grow
with the inner steps, while second-order MAML keeps every step's activations until it takes the meta-gradient.
The workload is the bench's: Omniglot 5-way 1-shot, 15 queries, meta-batch 32, the max-pool Conv4 (random
images), inner SGD at lr 0.4, Adam 1e-3; iMAML with λ = 2 and 5 CG steps (the paper's). Memory is the step's
own: on CPU the growth of the process's peak RSS over the RSS before it (``benchmarks.memory.step_memory``),
on CUDA that of ``torch.cuda.max_memory_allocated``. Each measurement runs in a fresh process (what one left
in the allocator would weigh on the next), after a step with one inner step that creates the thread pools and
kernels. Run from the repository root::

    .venv/bin/python -m benchmarks.inner_steps_memory
    .venv/bin/python -m benchmarks.inner_steps_memory --device cuda --steps 5,20,50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.memory import step_memory
from benchmarks.workloads import INNER_LR, OUTER_LR, ROOT, task_batch
from maml_cli.core import InnerLoopConfig, MetaLearner
from maml_cli.models import Conv4
from maml_cli.performance import tune_allocator

WORKLOAD = "omniglot-5w1s-q15-mb32"
METHODS = {"maml": dict(method="maml"), "imaml": dict(method="imaml")}  # maml: second order


def make_step(method: str, steps: int, engine: str, device: torch.device) -> Callable[[], None]:
    """One meta-training step (zero_grad → meta-gradient → Adam step) of ``method`` with ``steps`` inner steps."""
    torch.manual_seed(0)
    inner = InnerLoopConfig(steps=steps, lr=INNER_LR, engine=engine, **METHODS[method])
    learner = MetaLearner(Conv4(5, pooling="max"), inner=inner).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), OUTER_LR)
    batch = task_batch(WORKLOAD, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        learner.meta_backward(batch)
        optimizer.step()

    return step


def step_growth_mb(step: Callable[[], None], device: torch.device) -> float:
    """The memory one call of ``step`` adds at its peak, in MB."""
    if device.type != "cuda":
        return float(step_memory(step)["step_growth_mb"])
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def probe(method: str, steps: int, engine: str, device: torch.device) -> dict:
    """(In a fresh process) one step's memory growth and time, after a warm-up step."""
    tune_allocator()  # as maml-train and the bench do
    make_step(method, 1, engine, device)()
    step = make_step(method, steps, engine, device)
    start = time.perf_counter()
    growth = step_growth_mb(step, device)
    return dict(method=method, steps=steps, growth_mb=round(growth, 1), seconds=round(time.perf_counter() - start, 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="5,20,50", help="comma list of inner-step counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--engine", default="auto", help="auto, loop, threads or vmap")
    parser.add_argument("--probe", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]), args.engine, device)))
        return
    print(f"{WORKLOAD}, {device}, engine={args.engine}: a meta-training step's memory growth (MB) and its time (s)")
    print(f"{'inner steps':>11s} " + " ".join(f"{m + ' MB':>10s} {m + ' s':>8s}" for m in METHODS), flush=True)
    for steps in (int(s) for s in args.steps.split(",")):
        cells = []
        for method in METHODS:
            command = [sys.executable, "-m", "benchmarks.inner_steps_memory", "--probe", method, str(steps)]
            command += ["--device", args.device, "--engine", args.engine]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.splitlines()[-1])
            cells.append(f"{result['growth_mb']:10.1f} {result['seconds']:8.2f}")
        print(f"{steps:11d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
