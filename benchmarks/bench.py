"""``make bench``: how fast maml-cli meta-trains and evaluates, side by side with the usual way.

Times one meta-training step (zero_grad → meta-gradient → Adam step) of MAML on the MAML paper's
Omniglot Conv4 with max-pooling (64 filters, 28×28×1, BatchNorm with batch statistics, inner SGD lr 0.4,
Adam 1e-3, mean of the query losses) for

* A: second order, 1 inner step;  B: first order, 1 step;  C: second order, 5 steps,

at 5-way 1-shot 15 queries meta-batch 32 and 20-way 1-shot 15 queries meta-batch 16, for

* ``maml_cli``: ``MetaLearner.meta_backward`` (``engine=auto``) on ``maml_cli.models.Conv4``;
* ``reference``: the plain per-task loop with ``torch.autograd.grad(create_graph=True)`` over the
  canonical Conv4 (``benchmarks/reference.py``; how learn2learn, higher and TorchOpt work);
* ``higher``, ``torchopt``: the same workload through those libraries, when installed (``make bench``
  installs them; by default on 5w variant A for ``--lib-steps`` steps: they run the reference's kernels);
* ``maml_cli-vmap``, ``maml_cli-loop`` (on request): ``engine=vmap`` / ``engine=loop``, to document
  the ``engine=auto`` choice (on CPU threads for small tasks, else loop; vmap on CUDA);
* ``maml_cli-graph`` (CUDA, on request): ``maml_cli``'s whole step (meta-gradient and a capturable
  Adam step) captured once in a CUDA graph and replayed: what is left when no kernel launch costs
  host time.

``--check`` first compares the meta-gradients of ``maml_cli`` and the reference on the chosen device
(float64, 4 tasks, every variant): the relative difference must be at rounding level.

Implementations are timed round-robin in one process (the starting one rotates every round), so that
machine noise hits them alike; medians (and minima) of ``--steps`` timed steps after ``--warmup``.
Peak memory on CPU, in untimed steps before the timed ones (after each implementation has taken a step
on two tasks on the workload's first variant, which creates its thread pools and kernels once): free
memory is returned to the kernel (``malloc_trim``), the kernel's high-water mark reset
(``/proc/self/clear_refs``), then one step; the process's peak RSS in it (``peak_rss_mb``, the process's whole footprint) and its growth over the RSS
before it (``step_growth_mb``, the step's own), medians of ``--memory-samples`` steps on
``--memory-workloads`` (one step elsewhere); ``--memory subprocess`` measures as many steps in a fresh
subprocess instead, after a first one; on CUDA, ``torch.cuda.max_memory_allocated`` growth.
Also: task sampling per meta-batch on real Omniglot (vs. a meta-step) and the evaluation throughput
(600 5-way 1-shot tasks, 10 adaptation steps, ``MetaLearner.evaluate``; stride and max-pool Conv4).

glibc's allocator is tuned at start (``maml_cli.performance.tune_allocator``, as maml-cli's commands
do); it is process-wide, so the reference in this process benefits too. ``--malloc default`` runs
everything with glibc's defaults instead.

Writes ``outputs/bench/results.json`` and prints a table. Examples::

    make bench
    make bench BENCH_ARGS="--variants A --steps 5"
    .venv/bin/python benchmarks/bench.py --workloads 5w --impls maml_cli,reference --no-eval
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]


def _malloc_from_argv() -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--malloc" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--malloc="):
            return arg.split("=", 1)[1]
    return "tuned"


# The allocator must be tuned before the first large allocation: before torch is imported.
from maml_cli.performance import tune_allocator  # noqa: E402  (imports nothing heavy)

MALLOC_TUNED = tune_allocator() if _malloc_from_argv() == "tuned" else False

import torch  # noqa: E402
from torch import nn  # noqa: E402

from reference import LIBRARIES, CanonicalConv4  # noqa: E402

WORKLOADS = {
    "omniglot-5w1s-q15-mb32": dict(ways=5, shots=1, queries=15, tasks=32),
    "omniglot-20w1s-q15-mb16": dict(ways=20, shots=1, queries=15, tasks=16),
}
ALIASES = {"5w": "omniglot-5w1s-q15-mb32", "20w": "omniglot-20w1s-q15-mb16"}
VARIANTS = {"A": dict(steps=1, first_order=False), "B": dict(steps=1, first_order=True), "C": dict(steps=5, first_order=False)}
IMPLS = ("maml_cli", "reference", "higher", "torchopt", "maml_cli-vmap", "maml_cli-loop", "maml_cli-graph")
DEFAULT_IMPLS = ("maml_cli", "reference", "higher", "torchopt")
INNER_LR, OUTER_LR = 0.4, 1e-3
DATA_ROOT = Path(os.environ.get("MAML_DATA_ROOT", ROOT.parent / "shared" / "data")) / "omniglot"  # as the tests


# ----------------------------------------------------------------------------------------------- setup
def available(impl: str, device: torch.device) -> tuple[bool, str]:
    if impl == "maml_cli-graph":
        return (True, "") if device.type == "cuda" else (False, "CUDA graphs need --device cuda")
    if impl.startswith("maml_cli") or impl == "reference":
        return True, ""
    try:
        __import__(LIBRARIES[impl][0])
        return True, ""
    except Exception as error:  # not installed, or does not import against this torch
        return False, f"{type(error).__name__}: {error}".splitlines()[0][:160]


def omniglot(required: bool = False):
    """The Omniglot dataset of ``maml_cli.data`` (None when it cannot be built here)."""
    try:
        from maml_cli.data import build_dataset
        from maml_cli.data.config import OmniglotConfig

        return build_dataset(OmniglotConfig(root=DATA_ROOT, download=False))
    except Exception as error:
        if required:
            raise
        print(f"  (Omniglot unavailable: {type(error).__name__}: {str(error).splitlines()[0][:120]})", flush=True)
        return None


def task_batch(workload: str, device: torch.device, dataset=None, seed: int = 0, dtype=torch.float32):
    """One meta-batch: real Omniglot training tasks when ``dataset`` is given, else random ``dtype`` images."""
    from maml_cli.data.tasks import TaskBatch

    w = WORKLOADS[workload]
    if dataset is not None:
        batch = dataset.sampler("train", w["ways"], w["shots"], w["queries"], seed).sample(w["tasks"])
    else:
        g = torch.Generator().manual_seed(seed)
        labels = lambda per: torch.arange(w["ways"]).repeat_interleave(per).expand(w["tasks"], -1).contiguous()  # noqa: E731
        batch = TaskBatch(
            torch.rand(w["tasks"], w["ways"] * w["shots"], 1, 28, 28, generator=g, dtype=dtype), labels(w["shots"]),
            torch.rand(w["tasks"], w["ways"] * w["queries"], 1, 28, 28, generator=g, dtype=dtype), labels(w["queries"]),
        )
    return batch.to(device)


def make_learner(canonical: nn.Module, ways: int, variant: str, engine: str = "auto"):
    """maml-cli's learner on the max-pool Conv4, starting from ``canonical``'s weights."""
    from maml_cli.core import InnerLoopConfig, MetaLearner
    from maml_cli.models import Conv4

    v = VARIANTS[variant]
    model = Conv4(ways, pooling="max").to(next(canonical.parameters()).dtype)
    model.load_state_dict(dict(zip(model.state_dict(), canonical.state_dict().values())))
    inner = InnerLoopConfig(steps=v["steps"], lr=INNER_LR, first_order=v["first_order"], engine=engine)
    return MetaLearner(model, inner=inner)


def make_step(impl: str, workload: str, variant: str, batch, device: torch.device):
    """A callable doing one full meta-training step of ``impl`` (same initial weights for all)."""
    ways, v = WORKLOADS[workload]["ways"], VARIANTS[variant]
    torch.manual_seed(0)
    canonical = CanonicalConv4(ways)
    if impl.startswith("maml_cli"):
        engine = {"maml_cli-vmap": "vmap", "maml_cli-loop": "loop"}.get(impl, "auto")
        learner = make_learner(canonical, ways, variant, engine).to(device)
        graph = impl == "maml_cli-graph"
        optimizer = torch.optim.Adam(learner.parameters(), OUTER_LR, capturable=graph)

        def step():
            optimizer.zero_grad(set_to_none=True)
            learner.meta_backward(batch)
            optimizer.step()

        return captured(step, optimizer) if graph else step
    canonical.to(device)
    optimizer = torch.optim.Adam(canonical.parameters(), OUTER_LR)
    meta_backward = LIBRARIES[impl][1]
    fields = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)

    def step():
        optimizer.zero_grad(set_to_none=True)
        meta_backward(canonical, *fields, steps=v["steps"], lr=INNER_LR, first_order=v["first_order"])
        optimizer.step()

    return step


def captured(step, optimizer):
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


def check_gradients(device: torch.device, tasks: int = 4) -> list[dict]:
    """‖g_maml_cli − g_reference‖ / ‖g_reference‖ of the meta-gradient, per variant, in float64."""
    out = []
    for variant, v in VARIANTS.items():
        torch.manual_seed(1)
        canonical = CanonicalConv4(5).double().to(device)
        learner = make_learner(canonical, 5, variant).to(device)
        batch = task_batch("omniglot-5w1s-q15-mb32", device, seed=1, dtype=torch.float64)[:tasks]
        learner.meta_backward(batch)
        LIBRARIES["reference"][1](canonical, batch.x_support, batch.y_support, batch.x_query, batch.y_query,
                                  steps=v["steps"], lr=INNER_LR, first_order=v["first_order"])
        ours = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
        ref = torch.cat([p.grad.flatten() for p in canonical.parameters()])
        out.append(dict(variant=variant, relative_difference=((ours - ref).norm() / ref.norm()).item(), device=device.type,
                        engine=learner._engine(batch).value))
    return out


def check_no_host_sync(device: torch.device) -> dict:
    """One default training step (5w1s, 32 tasks, variant A) under CUDA's sync debug mode "error"."""
    step = make_step("maml_cli", "omniglot-5w1s-q15-mb32", "A", task_batch("omniglot-5w1s-q15-mb32", device), device)
    step()  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        found = None
    except RuntimeError as error:
        found = str(error).splitlines()[0][:200]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return dict(workload="host-sync-check-5w1s-mb32", variant="A", impl="maml_cli", host_sync=found, device=device.type)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- timing
def time_steps(workload, variant, impls, batch, device, steps, warmup, log, lib_steps=None, memory_samples=0, first=True) -> dict[str, dict]:
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
            fns[impl] = make_step(impl, workload, variant, batch, device)
        except Exception as error:  # an experimental path (a CUDA graph, say) that does not work here
            log(f"    {impl} failed to set up, left out: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    impls = list(fns)
    for impl in impls if first else ():
        make_step(impl, workload, variant, batch[:2], device)()
    libs = {"higher", "torchopt"}
    wall = {impl: [] for impl in impls}
    cpu = {impl: [] for impl in impls}
    peak_cuda = {impl: 0.0 for impl in impls}
    untimed = max(warmup, memory_samples)
    memory = {impl: [] for impl in impls}
    for round_ in range(untimed + steps):
        active = [i for i in fns if i not in libs or lib_steps is None or untimed - 1 <= round_ < untimed + lib_steps]
        order = active[round_ % len(active):] + active[: round_ % len(active)]
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
        log(f"    round {round_ + 1}/{warmup + steps}: " + "  ".join(f"{i} {wall[i][-1]:.2f}s" for i in active if wall[i]) + in_use)
    out = {}
    for impl in [i for i in impls if wall[i]]:
        out[impl] = dict(
            median_s=statistics.median(wall[impl]), min_s=min(wall[impl]), cpu_median_s=statistics.median(cpu[impl]),
            timed_steps=len(wall[impl]),
        )
        if memory[impl]:
            out[impl].update(_median_memory(memory[impl]))
        if device.type == "cuda":
            out[impl]["peak_mem_mb"] = round(peak_cuda[impl], 1)
            out[impl]["peak_mem_kind"] = "cuda max_memory_allocated growth"
    fns.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------- memory
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


def step_memory(step) -> dict:
    """One step's memory in this process: free memory is first returned to the kernel (``malloc_trim``)
    and the kernel's peak-RSS mark reset; then the process's peak RSS during the step, and its growth."""
    import ctypes

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


def _median_memory(samples: list[dict]) -> dict:
    """The medians of ``step_memory`` samples (with the growth of each), or the first error."""
    if any("memory_error" in m for m in samples):
        return next(m for m in samples if "memory_error" in m)
    medians = {key: round(statistics.median(m[key] for m in samples), 1) for key in samples[0]}
    return dict(medians, step_growth_samples_mb=[round(m["step_growth_mb"], 1) for m in samples],
                peak_mem_kind=f"in-process, median of {len(samples)} untimed step(s) after malloc_trim")


def probe_memory(args) -> None:
    """(Subprocess) ``step_memory`` of ``--memory-samples`` steps of one implementation after a first one, as JSON."""
    device = torch.device(args.device)
    workload, variant, impl = args.workloads[0], args.variants[0], args.impls[0]
    batch = task_batch(workload, device)  # random images: no dataset loading in the measured process
    step = make_step(impl, workload, variant, batch, device)
    step()  # a process's first step also creates thread pools and kernels, once: not counted
    memory = _median_memory([step_memory(step) for _ in range(args.memory_samples)])
    print(json.dumps(dict(memory, peak_mem_kind=f"fresh subprocess, median of {args.memory_samples} step(s) after a first")))


def measure_memory(workload, variant, impl, args, samples: int) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--probe-memory", "--workloads", workload, "--variants", variant,
        "--impls", impl, "--device", args.device, "--memory-samples", str(samples), "--malloc", args.malloc,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as error:
        detail = getattr(error, "stderr", "") or str(error)
        return dict(peak_rss_mb=None, memory_error=detail.strip().splitlines()[-1][:200] if detail.strip() else repr(error))


# ----------------------------------------------------------------------------------------------- data, eval
def time_sampling(workload: str, dataset, reps: int = 10) -> dict:
    w = WORKLOADS[workload]
    sampler = dataset.sampler("train", w["ways"], w["shots"], w["queries"], 1)
    for _ in range(2):
        sampler.sample(w["tasks"])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sampler.sample(w["tasks"])
        times.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(times), min_s=min(times), timed_steps=reps)


def time_evaluation(pooling: str, batch, device: torch.device, steps: int) -> dict:
    from maml_cli.core import InnerLoopConfig, MetaLearner
    from maml_cli.models import Conv4

    torch.manual_seed(0)
    learner = MetaLearner(Conv4(5, pooling=pooling), inner=InnerLoopConfig(eval_steps=steps)).to(device)
    learner.evaluate(batch[:2])  # warm-up (oneDNN primitive creation)
    sync(device)
    t0 = time.perf_counter()
    curve = learner.evaluate(batch)
    sync(device)
    seconds = time.perf_counter() - t0
    return dict(total_s=seconds, tasks=len(batch), tasks_per_s=len(batch) / seconds,
                engine=f"adaptation vmap, query passes {learner._engine(batch).value}",  # engine=auto
                curve_shape=list(curve.losses.shape))


# ----------------------------------------------------------------------------------------------- main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="5w,20w", help="comma list: 5w, 20w (or full names)")
    p.add_argument("--variants", default="A,B,C", help="comma list of A, B, C")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help=f"comma list of {', '.join(IMPLS)}")
    p.add_argument("--lib-workloads", default="5w", help="workloads on which higher/torchopt run ('all' for every one)")
    p.add_argument("--lib-variants", default="A", help="variants on which higher/torchopt run (comma list)")
    p.add_argument("--steps", type=int, default=10, help="timed meta-steps per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed meta-steps per implementation first")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned", help="glibc allocator setting (process-wide)")
    p.add_argument("--lib-steps", type=int, default=2, help="timed steps of higher/torchopt (they run the reference's kernels)")
    p.add_argument("--memory", choices=("inprocess", "subprocess", "none"), default="inprocess",
                   help="CPU memory: untimed steps in-process after malloc_trim (fast), or a fresh subprocess each")
    p.add_argument("--memory-samples", type=int, default=2, help="in-process memory steps (median) on --memory-workloads")
    p.add_argument("--memory-workloads", default="5w", help="workloads with --memory-samples memory steps (one elsewhere; 'all')")
    p.add_argument("--no-memory", action="store_true", help="same as --memory none")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation throughput")
    p.add_argument("--no-sampling", action="store_true", help="skip the task-sampling timing")
    p.add_argument("--check", action="store_true", help="first compare maml_cli's meta-gradients with the reference's")
    p.add_argument("--eval-tasks", type=int, default=600)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--eval-models", default="stride", help="Conv4 poolings to evaluate: stride (MAML's Omniglot net), max")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "results.json"))
    p.add_argument("--probe-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.no_memory:
        args.memory = "none"
    args.workloads = [ALIASES.get(w, w) for w in args.workloads.split(",") if w]
    args.variants = [v.strip().upper() for v in args.variants.split(",") if v]
    args.impls = [i.strip() for i in args.impls.split(",") if i]
    args.lib_variants = [v.strip().upper() for v in args.lib_variants.split(",") if v]
    args.lib_workloads = _workloads(args.lib_workloads)
    args.memory_workloads = _workloads(args.memory_workloads)
    for name, values, known in (("workload", args.workloads, WORKLOADS), ("variant", args.variants, VARIANTS), ("impl", args.impls, IMPLS)):
        unknown = [x for x in values if x not in known]
        if unknown:
            p.error(f"unknown {name}(s) {unknown}; choose from {', '.join(known)}")
    return args


def _workloads(names: str) -> list[str]:
    return list(WORKLOADS) if "all" in names.split(",") else [ALIASES.get(w, w) for w in names.split(",") if w]


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe_memory:
        probe_memory(args)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    started = time.perf_counter()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    threads = torch.get_num_threads()
    meta = dict(
        torch=torch.__version__, device=str(device), threads=threads, malloc=args.malloc, malloc_tuned=MALLOC_TUNED,
        cpu=_cpu_name(), python=platform.python_version(), steps=args.steps, warmup=args.warmup,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    log(f"maml-cli bench: torch {torch.__version__}, device {device}, {threads} threads, malloc {args.malloc}"
        f" (tuned={MALLOC_TUNED}), {args.warmup} warm-up + {args.steps} timed steps")
    skipped = {}
    impls = []
    for impl in args.impls:
        ok, why = available(impl, device)
        if ok:
            impls.append(impl)
        else:
            skipped[impl] = why
            log(f"  skipping {impl}: {why}")
    records = []
    if args.check:
        for c in check_gradients(device):
            records.append(dict(workload="gradient-check-5w1s-4tasks-float64", impl="maml_cli", **c))
            log(f"[check {c['variant']}] meta-gradient relative difference to the reference: {c['relative_difference']:.1e}")
        if device.type == "cuda":
            records.append(check_no_host_sync(device))
            log(f"[check] host-device syncs in a training step: {records[-1]['host_sync'] or 'none'}")
    dataset = None if args.no_sampling and args.no_eval else omniglot()
    for workload in args.workloads:
        batch = task_batch(workload, device, dataset)
        samples = args.memory_samples if workload in args.memory_workloads else 1
        for variant in args.variants:
            with_libs = workload in args.lib_workloads and variant in args.lib_variants
            here = [i for i in impls if i not in ("higher", "torchopt") or with_libs]
            log(f"[{workload} {variant}] timing {', '.join(here)}")
            inprocess = samples if device.type == "cpu" and args.memory == "inprocess" else 0
            timings = time_steps(workload, variant, here, batch, device, args.steps, args.warmup, log, args.lib_steps, inprocess,
                                 first=variant == args.variants[0])
            ref = timings.get("reference", {}).get("median_s")
            for impl in timings:
                rec = dict(workload=workload, variant=variant, impl=impl, **timings[impl], device=device.type, threads=threads,
                           data="omniglot" if dataset is not None else "random")
                rec["ratio_reference_over_this"] = ref / rec["median_s"] if ref else None
                if device.type == "cpu" and args.memory == "subprocess":
                    rec.update(measure_memory(workload, variant, impl, args, samples))
                elif device.type == "cuda":
                    rec["peak_rss_mb"] = rec.get("peak_mem_mb")
                records.append(rec)
            ref = next((r for r in records if r["workload"] == workload and r["variant"] == variant and r["impl"] == "reference"), {})
            for r in records:
                if r["workload"] == workload and r["variant"] == variant:
                    for key, ratio in (("peak_rss_mb", "memory_over_reference"), ("step_growth_mb", "growth_over_reference")):
                        if r.get(key) and ref.get(key):
                            r[ratio] = r[key] / ref[key]
        if not args.no_sampling and dataset is not None:
            s = time_sampling(workload, dataset)
            ours = next((r["median_s"] for r in records if r["workload"] == workload and r["variant"] == "A" and r["impl"] == "maml_cli"), None)
            rec = dict(workload=workload, variant="sampling", impl="maml_cli.data", **s, device="cpu", threads=threads,
                       fraction_of_step_A=s["median_s"] / ours if ours else None)
            records.append(rec)
            log(f"[{workload}] task sampling {s['median_s'] * 1e3:.1f} ms per meta-batch"
                + (f" = {100 * rec['fraction_of_step_A']:.2f}% of maml_cli's step A" if ours else ""))
        elif not args.no_sampling:
            skipped["sampling"] = "Omniglot not available"
    if not args.no_eval:
        if dataset is not None:
            eval_batch = dataset.sampler("test", 5, 1, 15, 0).sample(args.eval_tasks).to(device)
        else:
            from maml_cli.data.tasks import TaskBatch

            eval_batch = TaskBatch.cat([task_batch("omniglot-5w1s-q15-mb32", device, None, seed=s) for s in range(-(-args.eval_tasks // 32))])[: args.eval_tasks]
        for pooling in args.eval_models.split(","):
            log(f"[evaluation] {args.eval_tasks} tasks x {args.eval_steps} steps, Conv4 {pooling} ...")
            e = time_evaluation(pooling, eval_batch, device, args.eval_steps)
            records.append(dict(workload=f"omniglot-5w1s-q15-eval{args.eval_tasks}", variant=f"eval-{args.eval_steps}steps",
                                impl=f"maml_cli-conv4-{pooling}", median_s=e["total_s"], **e, device=device.type, threads=threads,
                                data="omniglot" if dataset is not None else "random"))
            log(f"    {e['total_s']:.1f} s, {e['tasks_per_s']:.1f} tasks/s ({e['engine']})")
    meta["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, skipped=skipped, records=records), indent=1))
    print_table(records, meta)
    log(f"wrote {out} ({meta['wall_s']:.0f} s)")
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(records, meta) -> None:
    print(f"\nmeta-training step, {meta['device']}, {meta['threads']} threads, malloc {meta['malloc']}:"
          " median (min) seconds over timed steps; ref/this = reference median / this median;\n"
          "step MB = a step's peak RSS growth, peak MB = the process's peak RSS in it (on CUDA: max_memory_allocated growth)")
    head = (f"{'workload':26s} {'var':3s} {'impl':14s} {'median s':>9s} {'min s':>7s} {'cpu s':>7s} {'ref/this':>8s}"
            f" {'step MB':>8s} {'/ref':>5s} {'peak MB':>8s} {'/ref':>5s}")
    print(head)
    print("-" * len(head))
    number = lambda r, key, spec, width: f"{r[key]:{spec}}".rjust(width) if r.get(key) else "-".rjust(width)  # noqa: E731
    for r in records:
        if r["variant"] in VARIANTS and "median_s" in r:
            print(f"{r['workload']:26s} {r['variant']:3s} {r['impl']:14s} {r['median_s']:9.4f} {r['min_s']:7.4f} {r['cpu_median_s']:7.2f}"
                  f" {number(r, 'ratio_reference_over_this', '.2f', 7)}x {number(r, 'step_growth_mb', '.0f', 8)}"
                  f" {number(r, 'growth_over_reference', '.2f', 5)} {number(r, 'peak_rss_mb', '.0f', 8)}"
                  f" {number(r, 'memory_over_reference', '.2f', 5)}  {1 / r['median_s']:.1f} steps/s")
    for r in records:
        if r["variant"] == "sampling":
            frac = f", {100 * r['fraction_of_step_A']:.2f}% of maml_cli step A" if r.get("fraction_of_step_A") else ""
            print(f"task sampling {r['workload']}: {1e3 * r['median_s']:.1f} ms per meta-batch{frac}")
        elif "host_sync" in r:
            print(f"host-device syncs in a training step ({r['device']}): {r['host_sync'] or 'none'}")
        elif "relative_difference" in r:
            print(f"meta-gradient check {r['variant']} ({r['device']}, engine {r['engine']}): relative difference {r['relative_difference']:.1e}")
        elif r["variant"].startswith("eval"):
            print(f"evaluation {r['impl']}: {r['tasks']} tasks x {r['variant']}: {r['total_s']:.1f} s ({r['tasks_per_s']:.1f} tasks/s; {r['engine']})")


if __name__ == "__main__":
    sys.exit(main())
