"""A step's CPU memory: the process's peak RSS during it and its growth, in-process or in a fresh subprocess."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch

from benchmarks.implementations import make_step
from benchmarks.workloads import ROOT, task_batch


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> float | None:
    """RSS now (MB), after resetting the kernel's peak-RSS mark (``/proc/self/clear_refs``); None if it cannot."""
    before = _rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return before
    except OSError:
        return None


def step_memory(step: Callable[[], None]) -> dict:
    """One step's memory in this process: free memory is first returned to the kernel (``malloc_trim``)
    and the kernel's peak-RSS mark reset; then the process's peak RSS during the step, and its growth."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = _reset_peak_rss()
    step()
    if before is None:
        return dict(memory_error="cannot reset the peak-RSS mark (/proc/self/clear_refs)")
    peak = _hwm_mb()
    return dict(peak_rss_mb=peak, step_growth_mb=peak - before, base_rss_mb=before)


def median_memory(samples: list[dict]) -> dict:
    """The medians of ``step_memory`` samples (with the growth of each), or the first error."""
    if any("memory_error" in m for m in samples):
        return next(m for m in samples if "memory_error" in m)
    medians = {key: round(statistics.median(m[key] for m in samples), 1) for key in samples[0]}
    return dict(
        medians,
        step_growth_samples_mb=[round(m["step_growth_mb"], 1) for m in samples],
        peak_mem_kind=f"in-process, median of {len(samples)} untimed step(s) after malloc_trim",
    )


def probe_memory(args) -> None:
    """(Subprocess) ``step_memory`` of ``--memory-samples`` steps of one implementation after a first one, as JSON."""
    device = torch.device(args.device)
    workload, variant, impl = args.workloads[0], args.variants[0], args.impls[0]
    batch = task_batch(workload, device)  # random images: no dataset loading in the measured process
    step = make_step(impl, workload, variant, batch, device)
    step()  # a process's first step also creates thread pools and kernels, once: not counted
    memory = median_memory([step_memory(step) for _ in range(args.memory_samples)])
    kind = f"fresh subprocess, median of {args.memory_samples} step(s) after a first"
    print(json.dumps(dict(memory, peak_mem_kind=kind)))


def measure_memory(workload: str, variant: str, impl: str, args, samples: int) -> dict:
    """``probe_memory`` of ``samples`` steps of ``impl`` in a fresh ``python -m benchmarks --probe-memory``."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "--probe-memory",
        "--workloads",
        workload,
        "--variants",
        variant,
        "--impls",
        impl,
        "--device",
        args.device,
        "--memory-samples",
        str(samples),
        "--malloc",
        args.malloc,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as error:
        detail = getattr(error, "stderr", "") or str(error)
        message = detail.strip().splitlines()[-1][:200] if detail.strip() else repr(error)
        return dict(peak_rss_mb=None, memory_error=message)
