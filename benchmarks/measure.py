"""Timing: meta-training steps round-robin (with their memory), task sampling, evaluation throughput."""

from __future__ import annotations

import gc
import statistics
import time

import torch

from benchmarks.implementations import THIRD_PARTY, make_step
from benchmarks.memory import median_memory, step_memory
from benchmarks.report import log
from benchmarks.workloads import workload
from maml_cli.core import InnerLoopConfig, MetaLearner
from maml_cli.core.tasks import TaskBatch
from maml_cli.models import Conv4


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA), so that wall time covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    name: str,
    variant: str,
    impls: list[str],
    batch: TaskBatch,
    device: torch.device,
    steps: int,
    warmup: int,
    lib_steps: int | None = None,
    memory_samples: int = 0,
    first: bool = True,
) -> dict[str, dict]:
    """Round-robin timing: every round runs each implementation once, starting one further along.

    ``max(warmup, memory_samples)`` untimed rounds come first, the last ``memory_samples`` of them
    measuring each implementation's memory (``step_memory``). ``higher``/``torchopt`` take part in the
    last untimed round and ``lib_steps`` timed ones only (they run the reference's kernels; this keeps
    the default run short). On a workload's ``first`` variant each implementation first takes a step on
    two tasks: it creates thread pools, worker arenas and kernels, once, which is not a step's memory.
    """
    fns = {}
    for impl in impls:
        try:
            fns[impl] = make_step(impl, name, variant, batch, device)
        except Exception as error:  # an experimental path (a CUDA graph, say) that does not work here
            log(f"    {impl} failed to set up, left out: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    impls = list(fns)
    for impl in impls if first else ():
        make_step(impl, name, variant, batch[:2], device)()
    wall = {impl: [] for impl in impls}
    cpu = {impl: [] for impl in impls}
    peak_cuda = {impl: 0.0 for impl in impls}
    untimed = max(warmup, memory_samples)
    memory = {impl: [] for impl in impls}
    for round_ in range(untimed + steps):
        third_party_round = lib_steps is None or untimed - 1 <= round_ < untimed + lib_steps
        active = [i for i in fns if i not in THIRD_PARTY or third_party_round]
        order = active[round_ % len(active) :] + active[: round_ % len(active)]
        for impl in order:
            if device.type == "cuda":
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            if untimed - memory_samples <= round_ < untimed:
                memory[impl].append(step_memory(fns[impl]))
                continue
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                fns[impl]()
                sync(device)
            except torch.OutOfMemoryError as error:
                log(f"    {impl} ran out of memory, left out: {str(error).splitlines()[0][:160]}")
                del fns[impl]
                gc.collect()
                continue
            t1, c1 = time.perf_counter(), time.process_time()
            if device.type == "cuda":
                peak_cuda[impl] = max(peak_cuda[impl], (torch.cuda.max_memory_allocated(device) - base) / 2**20)
            if round_ >= untimed:
                wall[impl].append(t1 - t0)
                cpu[impl].append(c1 - c0)
        in_use = f"  ({torch.cuda.memory_allocated(device) / 2**30:.2f} GiB allocated)" if device.type == "cuda" else ""
        times = "  ".join(f"{i} {wall[i][-1]:.2f}s" for i in active if wall[i])
        log(f"    round {round_ + 1}/{warmup + steps}: " + times + in_use)
    out = {}
    for impl in [i for i in impls if wall[i]]:
        out[impl] = dict(
            median_s=statistics.median(wall[impl]),
            min_s=min(wall[impl]),
            cpu_median_s=statistics.median(cpu[impl]),
            timed_steps=len(wall[impl]),
        )
        if memory[impl]:
            out[impl].update(median_memory(memory[impl]))
        if device.type == "cuda":
            out[impl]["peak_mem_mb"] = round(peak_cuda[impl], 1)
            out[impl]["peak_mem_kind"] = "cuda max_memory_allocated growth"
    fns.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def time_sampling(name: str, dataset, reps: int = 10) -> dict:
    """Seconds to sample one meta-batch of workload ``name`` from ``dataset`` (median of ``reps``, after 2)."""
    w = workload(name)
    sampler = dataset.sampler("train", w.ways, w.shots, w.queries, 1)
    for _ in range(2):
        sampler.sample(w.tasks)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sampler.sample(w.tasks)
        times.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(times), min_s=min(times), timed_steps=reps)


def time_evaluation(pooling: str, batch: TaskBatch, device: torch.device, steps: int) -> dict:
    """``MetaLearner.evaluate`` of a 5-way Conv4 with ``pooling`` on ``batch``: seconds and tasks per second."""
    torch.manual_seed(0)
    learner = MetaLearner(Conv4(5, pooling=pooling), inner=InnerLoopConfig(eval_steps=steps)).to(device)
    learner.evaluate(batch[:2])  # warm-up (oneDNN primitive creation)
    sync(device)
    t0 = time.perf_counter()
    curve = learner.evaluate(batch)
    sync(device)
    seconds = time.perf_counter() - t0
    scoring = learner.engine_for(batch)  # engine=auto
    return dict(
        total_s=seconds,
        tasks=len(batch),
        tasks_per_s=len(batch) / seconds,
        engine=f"adaptation vmap, query passes {scoring.value}",
        curve_shape=list(curve.losses.shape),
    )
