"""The checks before the timing: maml-cli's meta-gradients equal the reference's, and (CUDA) a step never waits
on the host. ``--no-check`` skips them."""

from __future__ import annotations

import torch

from benchmarks.implementations import make_learner, make_step
from benchmarks.reference import CanonicalConv4, reference_meta_backward
from benchmarks.report import log
from benchmarks.workloads import PRESET_VARIANT, PRESETS, VARIANTS, inner_config, task_batch, workload

MAXPOOL_5W = "omniglot-5w1s-q15-mb32"


def run_checks(device: torch.device, names: list[str]) -> list[dict]:
    """The records of the meta-gradient check: MAML's variants on the max-pool 5-way workload and each preset
    among ``names``; then (CUDA) the host-sync check."""
    cases = [(MAXPOOL_5W, v) for v in VARIANTS] + [(n, PRESET_VARIANT) for n in names if n in PRESETS]
    records = []
    for name, variant in cases:
        difference, engine = check_gradient(name, variant, device)
        records.append(
            dict(
                workload=f"gradient-check-{name}-4tasks-float64",
                variant=variant,
                impl="maml_cli",
                relative_difference=difference,
                device=device.type,
                engine=engine,
            )
        )
        log(f"[check {name} {variant}] meta-gradient relative difference to the reference: {difference:.1e}")
    if device.type == "cuda":
        records.append(check_no_host_sync(device))
        log(f"[check] host-device syncs in a training step: {records[-1]['host_sync'] or 'none'}")
    return records


def check_gradient(name: str, variant: str, device: torch.device, tasks: int = 4) -> tuple[float, str]:
    """‖g_maml_cli − g_reference‖ / ‖g_reference‖ of the meta-gradient on ``tasks`` random tasks in float64,
    and the engine that computed ours."""
    w, inner = workload(name), inner_config(name, variant)
    torch.manual_seed(1)
    canonical = CanonicalConv4(w.ways, hidden=w.hidden, pooling=w.pooling).double().to(device)
    learner = make_learner(canonical, name, variant).to(device)
    batch = task_batch(name, device, seed=1, dtype=torch.float64)[:tasks]
    learner.meta_backward(batch)
    reference_meta_backward(canonical, *batch.tensors(), steps=inner.steps, lr=inner.lr, first_order=inner.first_order)
    ours = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    ref = torch.cat([p.grad.flatten() for p in canonical.parameters()])
    return ((ours - ref).norm() / ref.norm()).item(), learner.engine_for(batch).value


def check_no_host_sync(device: torch.device) -> dict:
    """One default training step (5w1s, 32 tasks, variant A) under CUDA's sync debug mode "error"."""
    step = make_step("maml_cli", MAXPOOL_5W, "A", task_batch(MAXPOOL_5W, device), device)
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
