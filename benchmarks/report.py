"""What the bench says: progress lines, the machine's name, and the closing table."""

from __future__ import annotations

import platform

from benchmarks.workloads import PRESET_VARIANT, VARIANTS


def log(message: str) -> None:
    """A progress line, shown at once."""
    print(message, flush=True)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _number(record: dict, key: str, spec: str, width: int) -> str:
    return f"{record[key]:{spec}}".rjust(width) if record.get(key) else "-".rjust(width)


def print_table(records: list[dict], meta: dict) -> None:
    """The meta-training steps as a table, then one line per check, sampling and evaluation record."""
    print(
        f"\nmeta-training step, {meta['device']}, {meta['threads']} threads, malloc {meta['malloc']}:"
        " median (min) seconds over timed steps; ref/this = reference median / this median;\n"
        "step MB = a step's peak RSS growth, peak MB = the process's peak RSS in it"
        " (on CUDA: max_memory_allocated growth)"
    )
    head = (
        f"{'workload':26s} {'var':6s} {'impl':16s} {'median s':>9s} {'min s':>7s} {'cpu s':>7s} {'ref/this':>8s}"
        f" {'step MB':>8s} {'/ref':>5s} {'peak MB':>8s} {'/ref':>5s}"
    )
    print(head)
    print("-" * len(head))
    for r in records:
        if (r["variant"] in VARIANTS or r["variant"] == PRESET_VARIANT) and "median_s" in r:
            print(
                f"{r['workload']:26s} {r['variant']:6s} {r['impl']:16s} {r['median_s']:9.4f} {r['min_s']:7.4f}"
                f" {r['cpu_median_s']:7.2f} {_number(r, 'ratio_reference_over_this', '.2f', 7)}x"
                f" {_number(r, 'step_growth_mb', '.0f', 8)} {_number(r, 'growth_over_reference', '.2f', 5)}"
                f" {_number(r, 'peak_rss_mb', '.0f', 8)} {_number(r, 'memory_over_reference', '.2f', 5)}"
                f"  {1 / r['median_s']:.1f} steps/s"
            )
    for r in records:
        if "floor_s" in r:
            print(
                f"convolution floor {r['workload']} {r['variant']}: {r['gflop']:.1f} GFLOP a step at"
                f" {r['convolution_gflops']:.0f} GFLOP/s = {r['floor_s']:.3f} s; {r['impl']} {r['over_floor']:.2f}x it"
            )
    for r in records:
        if r["variant"] == "sampling":
            frac = (
                f", {100 * r['fraction_of_step']:.2f}% of maml_cli's step {r['of_variant']}" if r["of_variant"] else ""
            )
            print(f"task sampling {r['workload']}: {1e3 * r['median_s']:.1f} ms per meta-batch{frac}")
        elif "host_sync" in r:
            print(f"host-device syncs in a training step ({r['device']}): {r['host_sync'] or 'none'}")
        elif "relative_difference" in r:
            print(
                f"meta-gradient check {r['workload']} {r['variant']} ({r['device']}, engine {r['engine']}):"
                f" relative difference {r['relative_difference']:.1e}"
            )
        elif r["variant"].startswith("eval"):
            print(
                f"evaluation {r['impl']}: {r['tasks']} tasks x {r['variant']}: {r['total_s']:.1f} s"
                f" ({r['tasks_per_s']:.1f} tasks/s; {r['engine']})"
            )
