"""The bench's flags and its run: checks, each workload's steps and sampling, evaluation, then results.json."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import benchmarks
from benchmarks.checks import run_checks
from benchmarks.implementations import DEFAULT_IMPLS, IMPLS, available
from benchmarks.memory import probe_memory
from benchmarks.records import evaluation_records, sampling_record, step_records
from benchmarks.report import cpu_name, log, print_table
from benchmarks.workloads import MAXPOOL, PRESET_VARIANT, PRESETS, ROOT, VARIANTS, omniglot, workload_names
from maml_cli.performance import allocator_tuned


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags, with the comma lists split and checked."""
    description = benchmarks.__doc__.split("\n\n")[0]
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--workloads",
        default="presets,5w",
        help="comma list: presets (the four Omniglot paper presets), 5w, 20w (max-pool, 15 queries), full names, all",
    )
    p.add_argument("--variants", default="A", help="comma list of A, B, C: MAML's variants on the max-pool workloads")
    p.add_argument("--full", action="store_true", help="every workload and variant, and both Conv4s at evaluation")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help=f"comma list of {', '.join(IMPLS)}")
    p.add_argument("--lib-workloads", default="5w", help="workloads on which higher/torchopt run ('all' for every one)")
    p.add_argument(
        "--lib-variants",
        default="A",
        help="max-pool variants on which higher/torchopt run (comma list; presets: their own)",
    )
    p.add_argument("--steps", type=int, default=10, help="timed meta-steps per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed meta-steps per implementation first")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument(
        "--malloc", choices=("tuned", "default"), default="tuned", help="glibc allocator setting (process-wide)"
    )
    p.add_argument(
        "--lib-steps", type=int, default=2, help="timed steps of higher/torchopt (they run the reference's kernels)"
    )
    p.add_argument(
        "--memory",
        choices=("inprocess", "subprocess", "none"),
        default="inprocess",
        help="CPU memory: untimed steps in-process after malloc_trim (fast), or a fresh subprocess each",
    )
    p.add_argument(
        "--memory-samples", type=int, default=2, help="in-process memory steps (median) on --memory-workloads"
    )
    p.add_argument(
        "--memory-workloads", default="5w", help="workloads with --memory-samples memory steps (one elsewhere; 'all')"
    )
    p.add_argument("--no-memory", action="store_true", help="same as --memory none")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile maml_cli and the reference by operator (CPU; tables in profiles/ beside --out)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation throughput")
    p.add_argument("--no-sampling", action="store_true", help="skip the task-sampling timing")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the float64 comparison of maml_cli's meta-gradients with the reference's",
    )
    p.add_argument("--eval-tasks", type=int, default=600)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument(
        "--eval-models", default="stride", help="Conv4 poolings to evaluate: stride (MAML's Omniglot net), max"
    )
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "results.json"))
    p.add_argument("--probe-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.no_memory:
        args.memory = "none"
    if args.full:
        args.workloads, args.variants, args.eval_models = "all", ",".join(VARIANTS), "stride,max"
    args.workloads = workload_names(args.workloads)
    args.variants = [
        v.strip() if v.strip() == PRESET_VARIANT else v.strip().upper() for v in args.variants.split(",") if v
    ]
    args.impls = [i.strip() for i in args.impls.split(",") if i]
    args.lib_variants = [v.strip().upper() for v in args.lib_variants.split(",") if v]  # presets: their own
    args.lib_workloads = workload_names(args.lib_workloads)
    args.memory_workloads = workload_names(args.memory_workloads)
    for name, values, known in (
        ("workload", args.workloads, [*PRESETS, *MAXPOOL]),
        ("variant", args.variants, [*VARIANTS, PRESET_VARIANT]),
        ("impl", args.impls, IMPLS),
    ):
        unknown = [x for x in values if x not in known]
        if unknown:
            p.error(f"unknown {name}(s) {unknown}; choose from {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench that ``argv`` asks for: write its records to ``--out`` and print the table."""
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
    threads = torch.get_num_threads()
    meta = dict(
        torch=torch.__version__,
        device=str(device),
        threads=threads,
        malloc=args.malloc,
        malloc_tuned=allocator_tuned(),
        cpu=cpu_name(),
        python=platform.python_version(),
        steps=args.steps,
        warmup=args.warmup,
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    log(
        f"maml-cli bench: torch {torch.__version__}, device {device}, {threads} threads, malloc {args.malloc}"
        f" (tuned={meta['malloc_tuned']}), {args.warmup} warm-up + {args.steps} timed steps"
    )
    impls, skipped = [], {}
    for impl in args.impls:
        ok, why = available(impl, device)
        if ok:
            impls.append(impl)
        else:
            skipped[impl] = why
            log(f"  skipping {impl}: {why}")
    records = [] if args.no_check else run_checks(device, args.workloads)
    dataset = None if args.no_sampling and args.no_eval else omniglot()
    for workload in args.workloads:
        steps = step_records(workload, args, impls, device, dataset, threads)
        records += steps
        if not args.no_sampling and dataset is not None:
            records.append(sampling_record(workload, dataset, steps, threads))
        elif not args.no_sampling:
            skipped["sampling"] = "Omniglot not available"
    if not args.no_eval:
        records += evaluation_records(args, device, dataset, threads)
    meta["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, skipped=skipped, records=records), indent=1))
    print_table(records, meta)
    log(f"wrote {out} ({meta['wall_s']:.0f} s)")
    return 0
