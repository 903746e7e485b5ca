"""The jobs of a multirun: their number on the lines of parallel jobs, and their results where they were launched.

With ``launcher=joblib`` the jobs share the console: their log lines start with ``[job N]`` (the log format
of ``conf/launcher/joblib.yaml``), and :func:`line_prefix` gives that prefix to other output. The joblib and
submitit launchers run jobs in other processes (submitit's output goes to ``<sweep dir>/.submitit/``):
:class:`JobResults`, a Hydra callback, has each job record its status and return value in
``<job dir>/.hydra/job_return.json``, and the launching process print every job's result when the multirun
ends, whether it succeeded or not.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from maml_cli.cli.rundir import torchrun_follower
from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import atomic_write

RESULT = "job_return.json"


def line_prefix() -> str:
    """``[job N] `` in a job of ``launcher=joblib`` (parallel jobs share the console), else nothing."""
    hydra = HydraConfig.get()
    return f"[job {hydra.job.num}] " if hydra.runtime.choices.get("hydra/launcher") == "joblib" else ""


class JobResults(Callback):
    """Each job of a multirun records its result; the process that launched them prints them all at its exit."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        if subdir is not None:
            atexit.register(print_results, Path(OmegaConf.select(config, "hydra.sweep.dir")).absolute(), subdir)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.mode != RunMode.MULTIRUN or hydra.output_subdir is None or torchrun_follower():
            return
        record = {"num": hydra.job.num, "overrides": list(hydra.overrides.task), "status": job_return.status.name}
        try:
            record["return_value"] = job_return.return_value
        except Exception as error:  # the job's own exception, raised again by return_value
            detail = (str(error).splitlines() or [""])[0]
            record["error"] = detail if isinstance(error, MamlError) else f"{type(error).__name__}: {detail}"
        path = Path(hydra.runtime.output_dir, hydra.output_subdir, RESULT)
        atomic_write(path, json.dumps(record, default=repr).encode())


def print_results(sweep_dir: Path, subdir: str) -> None:
    """One line per job started in ``sweep_dir``: the overrides that set it apart, and what it returned or
    why it failed."""
    jobs = sorted((path.parent for path in sweep_dir.glob(f"*/{subdir}")), key=lambda job: (len(job.name), job.name))
    records = {job: _record(job / subdir / RESULT) for job in jobs}
    recorded = [set(record["overrides"]) for record in records.values() if record]
    common = set.intersection(*recorded) if recorded else set()  # the sweep's own overrides
    for job, record in records.items():
        own = " ".join(o for o in record.get("overrides", []) if o not in common)
        if not record:
            outcome = "no result: it was killed or is still running (see its log)"
        elif "error" in record:
            outcome = f"{record['status']}: {record['error']}"
        else:
            value = record["return_value"]
            outcome = f"{record['status']}, returned {f'{value:.6g}' if isinstance(value, float) else value}"
        print(f"[job {record.get('num', job.name)}] {own or job}: {outcome}", flush=True)


def _record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
