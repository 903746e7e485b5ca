"""``--profile``: where a step's time goes, by torch.profiler: its operators by self CPU time, per implementation.

torch.profiler follows one thread (and the intra-op work it launches), not the threads engine's workers: so
both implementations are profiled on one thread, maml-cli with ``engine=loop``, the work the threads engine
splits between its workers. The figures are CPU time by operator, not the timed steps' wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.implementations import make_step
from benchmarks.report import log

PROFILED = {"maml_cli": "maml_cli-loop", "reference": "reference"}  # what profiles an implementation


def profile_impl(impl: str, workload: str, variant: str, batch, device: torch.device, folder: Path) -> dict:
    """The profile of one step of ``impl`` (see the module's docstring), its table written under ``folder``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step = make_step(PROFILED[impl], workload, variant, batch, device)
        found = profile_step(step, folder / f"{workload}-{variant}-{impl}.txt")
    finally:
        torch.set_num_threads(threads)
    top = ", ".join(f"{op['name']} {op['self_cpu_ms']:.0f} ms" for op in found["top_operators"][:4])
    log(f"    profile {impl}: {found['operator_calls']} operator calls, {found['self_cpu_total_ms']:.0f} ms; {top}")
    return found


def profile_step(step: Callable[[], None], path: Path, rows: int = 15) -> dict:
    """Profile one call of ``step`` (after an unprofiled one): write the operator table to ``path`` and return
    the operator calls, the total self CPU time and the ``rows`` most expensive operators."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(events.table(sort_by="self_cpu_time_total", row_limit=rows))
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return dict(
        operator_calls=sum(e.count for e in events),
        self_cpu_total_ms=sum(e.self_cpu_time_total for e in events) / 1e3,
        top_operators=[dict(name=e.key, calls=e.count, self_cpu_ms=e.self_cpu_time_total / 1e3) for e in top],
        table=str(path),
    )
