"""``--check``: maml-cli's meta-gradients equal the reference's, and (CUDA) a step never waits on the host."""

from __future__ import annotations

import torch

from benchmarks.implementations import make_learner, make_step
from benchmarks.reference import CanonicalConv4, reference_meta_backward
from benchmarks.report import log
from benchmarks.workloads import INNER_LR, VARIANTS, task_batch


def run_checks(device: torch.device) -> list[dict]:
    """The records of ``--check``: the meta-gradient comparison per variant, then (CUDA) the host-sync check."""
    records = []
    for c in check_gradients(device):
        records.append(dict(workload="gradient-check-5w1s-4tasks-float64", impl="maml_cli", **c))
        log(
            f"[check {c['variant']}] meta-gradient relative difference to the reference: {c['relative_difference']:.1e}"
        )
    if device.type == "cuda":
        records.append(check_no_host_sync(device))
        log(f"[check] host-device syncs in a training step: {records[-1]['host_sync'] or 'none'}")
    return records


def check_gradients(device: torch.device, tasks: int = 4) -> list[dict]:
    """‖g_maml_cli − g_reference‖ / ‖g_reference‖ of the meta-gradient, per variant, in float64."""
    out = []
    for variant, v in VARIANTS.items():
        torch.manual_seed(1)
        canonical = CanonicalConv4(5).double().to(device)
        learner = make_learner(canonical, 5, variant).to(device)
        batch = task_batch("omniglot-5w1s-q15-mb32", device, seed=1, dtype=torch.float64)[:tasks]
        learner.meta_backward(batch)
        reference_meta_backward(
            canonical, *batch.tensors(), steps=v["steps"], lr=INNER_LR, first_order=v["first_order"]
        )
        ours = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
        ref = torch.cat([p.grad.flatten() for p in canonical.parameters()])
        difference = ((ours - ref).norm() / ref.norm()).item()
        engine = learner.engine_for(batch)
        out.append(dict(variant=variant, relative_difference=difference, device=device.type, engine=engine.value))
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
