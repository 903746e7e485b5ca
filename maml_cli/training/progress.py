"""Progress: a live bar on a terminal, plain lines otherwise; the job log file always gets the lines."""

from __future__ import annotations

import logging
import resource
import sys
import time
from datetime import timedelta

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts meta-steps; ``report`` shows the interval's metrics, speed and ETA.

    On a terminal the tqdm bar (meta-loss, query accuracy, steps/s, ETA) replaces the console's
    per-interval lines, which still go to the job's log file.
    """

    def __init__(self, total: int, start: int, stream=None, show: bool = True):
        stream = stream or sys.stderr
        self.total, self.done, self.show = total, start, show  # show=False: nothing shown (torchrun ranks > 0)
        self.bar = tqdm(
            total=total,
            initial=start,
            unit="step",
            file=stream,
            dynamic_ncols=True,
            disable=not (show and stream.isatty()),
        )
        self._consoles = [
            h
            for h in logging.getLogger().handlers
            if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
        ]
        self._mark = (time.perf_counter(), start)

    def __enter__(self) -> Progress:
        if not self.bar.disable:
            for handler in self._consoles:
                handler.addFilter(_not_progress)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        for handler in self._consoles:
            handler.removeFilter(_not_progress)

    def advance(self) -> None:
        self.done += 1
        self.bar.update()

    def rate(self) -> float:
        """Meta-steps per second since the previous call (or the start)."""
        now, then = time.perf_counter(), self._mark
        self._mark = (now, self.done)
        return (self.done - then[1]) / max(now - then[0], 1e-9)

    def report(self, metrics: dict[str, float], rate: float) -> None:
        """One line per interval; ``metrics`` maps short names to values (e.g. ``loss``, ``acc``)."""
        if not self.show:
            return
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        eta = timedelta(seconds=round((self.total - self.done) / rate)) if rate > 0 else "?"
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        log.info(
            "step %d/%d | %s | %.2f steps/s | ETA %s", self.done, self.total, shown, rate, eta, extra={"progress": True}
        )


def _not_progress(record: logging.LogRecord) -> bool:
    return not getattr(record, "progress", False)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA's max allocated on a GPU, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)
