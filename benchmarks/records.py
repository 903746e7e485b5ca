"""The records of results.json: each workload's steps with their ratios to the reference, sampling, evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.floor import convolution_floor
from benchmarks.implementations import THIRD_PARTY, make_step
from benchmarks.measure import time_evaluation, time_sampling, time_steps
from benchmarks.memory import measure_memory
from benchmarks.profile import PROFILED, profile_impl
from benchmarks.report import log
from benchmarks.workloads import PRESET_VARIANT, task_batch, variants
from maml_cli.core.tasks import TaskBatch


def step_records(
    workload: str, args: argparse.Namespace, impls: list[str], device: torch.device, dataset, threads: int
) -> list[dict]:
    """One record per variant and implementation of a meta-training step of ``workload``."""
    batch = task_batch(workload, device, dataset)
    samples = args.memory_samples if workload in args.memory_workloads else 1
    timed = variants(workload, args.variants)
    records = []
    for variant in timed:
        with_libs = workload in args.lib_workloads and (variant in args.lib_variants or variant == PRESET_VARIANT)
        here = [i for i in impls if i not in THIRD_PARTY or with_libs]
        log(f"[{workload} {variant}] timing {', '.join(here)}")
        inprocess = samples if device.type == "cpu" and args.memory == "inprocess" else 0
        timings = time_steps(
            workload,
            variant,
            here,
            batch,
            device,
            steps=args.steps,
            warmup=args.warmup,
            lib_steps=args.lib_steps,
            memory_samples=inprocess,
            first=variant == timed[0],
        )
        ref = timings.get("reference", {}).get("median_s")
        variant_records = []
        for impl in timings:
            rec = dict(
                workload=workload,
                variant=variant,
                impl=impl,
                **timings[impl],
                device=device.type,
                threads=threads,
                data="omniglot" if dataset is not None else "random",
            )
            rec["ratio_reference_over_this"] = ref / rec["median_s"] if ref else None
            if device.type == "cpu" and args.memory == "subprocess":
                rec.update(measure_memory(workload, variant, impl, args, samples))
            elif device.type == "cuda":
                rec["peak_rss_mb"] = rec.get("peak_mem_mb")
            if args.profile and device.type == "cpu" and impl in PROFILED:
                folder = Path(args.out).parent / "profiles"
                rec["profile"] = profile_impl(impl, workload, variant, batch, device, folder)
            if impl == "maml_cli" and device.type == "cpu":
                rec.update(_floor(workload, variant, batch, device, rec["median_s"], threads))
            variant_records.append(rec)
        _add_memory_ratios(variant_records)
        records += variant_records
    return records


def _floor(workload: str, variant: str, batch: TaskBatch, device: torch.device, median_s: float, threads: int) -> dict:
    """The convolution floor of maml_cli's step, counted on its per-task engine (the same work)."""
    floor = convolution_floor(make_step("maml_cli-loop", workload, variant, batch, device), median_s, threads)
    log(
        f"    convolution floor: {floor['gflop']:.1f} GFLOP at {floor['convolution_gflops']:.0f} GFLOP/s"
        f" = {floor['floor_s']:.3f} s; maml_cli {floor['over_floor']:.2f}x it"
    )
    return floor


def _add_memory_ratios(records: list[dict]) -> None:
    """Each record's peak RSS and step growth over the reference's, among one variant's records."""
    ref = next((r for r in records if r["impl"] == "reference"), {})
    for r in records:
        for key, ratio in (("peak_rss_mb", "memory_over_reference"), ("step_growth_mb", "growth_over_reference")):
            if r.get(key) and ref.get(key):
                r[ratio] = r[key] / ref[key]


def sampling_record(workload: str, dataset, steps: list[dict], threads: int) -> dict:
    """Task sampling per meta-batch of ``workload``, and its fraction of maml_cli's step (the first variant of
    ``steps``)."""
    s = time_sampling(workload, dataset)
    ours = next((r for r in steps if r["impl"] == "maml_cli"), None)
    rec = dict(
        workload=workload,
        variant="sampling",
        impl="maml_cli.data",
        **s,
        device="cpu",
        threads=threads,
        fraction_of_step=s["median_s"] / ours["median_s"] if ours else None,
        of_variant=ours["variant"] if ours else None,
    )
    log(
        f"[{workload}] task sampling {s['median_s'] * 1e3:.1f} ms per meta-batch"
        + (f" = {100 * rec['fraction_of_step']:.2f}% of maml_cli's step {ours['variant']}" if ours else "")
    )
    return rec


def evaluation_records(args: argparse.Namespace, device: torch.device, dataset, threads: int) -> list[dict]:
    """The evaluation throughput of each ``--eval-models`` Conv4 on ``--eval-tasks`` 5-way 1-shot tasks."""
    if dataset is not None:
        batch = dataset.sampler("test", 5, 1, 15, 0).sample(args.eval_tasks).to(device)
    else:
        meta_batches = -(-args.eval_tasks // 32)
        random = [task_batch("omniglot-5w1s-q15-mb32", device, None, seed=s) for s in range(meta_batches)]
        batch = TaskBatch.cat(random)[: args.eval_tasks]
    records = []
    for pooling in args.eval_models.split(","):
        log(f"[evaluation] {args.eval_tasks} tasks x {args.eval_steps} steps, Conv4 {pooling} ...")
        e = time_evaluation(pooling, batch, device, args.eval_steps)
        records.append(
            dict(
                workload=f"omniglot-5w1s-q15-eval{args.eval_tasks}",
                variant=f"eval-{args.eval_steps}steps",
                impl=f"maml_cli-conv4-{pooling}",
                median_s=e["total_s"],
                **e,
                device=device.type,
                threads=threads,
                data="omniglot" if dataset is not None else "random",
            )
        )
        log(f"    {e['total_s']:.1f} s, {e['tasks_per_s']:.1f} tasks/s ({e['engine']})")
    return records
