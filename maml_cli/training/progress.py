"""Progress: a live bar on a terminal, plain lines otherwise; the job log file always gets the lines.

Also training's wall clock: the time spent so far, over resumes, and what is left of a ``max_time`` budget.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from contextlib import ExitStack
from datetime import timedelta

import torch
from tqdm import tqdm

from maml_cli.runs.progress import progress_bar

log = logging.getLogger(__name__)


def now() -> float:
    """The clock of ``Stopwatch``: monotonic seconds."""
    return time.monotonic()


class Stopwatch:
    """Training's wall-clock seconds: ``spent_s`` before this process (saved in checkpoints) plus this process's.

    With a ``limit_s`` (``max_time``) it is ``exhausted`` once the seconds reach it.
    """

    def __init__(self, limit_s: float | None = None, spent_s: float = 0.0):
        self.limit_s, self.spent_s, self.start = limit_s, spent_s, now()  # start None: stopped

    def elapsed(self) -> float:
        return self.spent_s + (now() - self.start if self.start is not None else 0.0)

    def left(self) -> float:
        """Seconds left of the budget (inf without one)."""
        return math.inf if self.limit_s is None else max(self.limit_s - self.elapsed(), 0.0)

    def spent_share(self) -> float:
        """The share of the budget spent (0 without one)."""
        if self.limit_s is None:
            return 0.0
        return min(self.elapsed() / self.limit_s, 1.0) if self.limit_s > 0 else 1.0

    def exhausted(self) -> bool:
        return self.left() == 0.0

    def stop(self) -> None:
        """Stop counting: training is over (the final test is not part of the budget)."""
        self.spent_s, self.start = self.elapsed(), None


class Progress:
    """Counts meta-steps; ``report`` shows the interval's metrics, speed and ETA.

    On a terminal the tqdm bar (meta-loss, query accuracy, steps/s, ETA) replaces the console's
    per-interval lines, which still go to the job's log file. Console log lines go above the bar.
    The ETA is the sooner of the last meta-step and the end of the ``stopwatch``'s budget.
    """

    def __init__(self, total: int, start: int, stream=None, show: bool = True, stopwatch: Stopwatch | None = None):
        self.total, self.done, self.show = total, start, show  # show=False: nothing shown (torchrun ranks > 0)
        self.stopwatch = stopwatch or Stopwatch()
        self._bar = progress_bar(
            total, "", "step", stream, show, initial=start, tqdm_class=_BudgetBar, time_left=self.stopwatch.left
        )
        self._consoles = [
            h
            for h in logging.getLogger().handlers
            if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
        ]
        self._context = ExitStack()
        self._mark = (time.perf_counter(), start)

    def __enter__(self) -> Progress:
        self.bar = self._context.enter_context(self._bar)
        if not self.bar.disable:  # the bar shows the progress lines on the console
            for handler in self._consoles:
                handler.addFilter(_not_progress)
                self._context.callback(handler.removeFilter, _not_progress)
        return self

    def __exit__(self, *exc) -> None:
        self._context.close()

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
        seconds = eta_s(self.total - self.done, rate, self.stopwatch.left())
        eta = timedelta(seconds=round(seconds)) if math.isfinite(seconds) else "?"
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        log.info(
            "step %d/%d | %s | %.2f steps/s | ETA %s", self.done, self.total, shown, rate, eta, extra={"progress": True}
        )


def eta_s(steps: int, rate: float, time_left: float) -> float:
    """Seconds to the end: of ``steps`` at ``rate`` steps/s, or of the ``time_left`` of the budget if sooner."""
    return min(steps / rate if rate > 0 else math.inf, time_left)


class _BudgetBar(tqdm):
    """A tqdm bar whose ETA is the sooner of its last step and the end of the time budget (``time_left()``)."""

    def __init__(self, *args, time_left, **kwargs):
        self.time_left = time_left
        super().__init__(
            *args,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{eta_or_budget}, {rate_fmt}{postfix}]",
            **kwargs,
        )

    @property
    def format_dict(self) -> dict:
        values = super().format_dict
        n, total, elapsed = values["n"], values["total"], values["elapsed"]
        rate = values["rate"] or ((n - values["initial"]) / elapsed if elapsed else 0)
        seconds = eta_s(total - n, rate, self.time_left())
        return {**values, "eta_or_budget": self.format_interval(seconds) if math.isfinite(seconds) else "?"}


def _not_progress(record: logging.LogRecord) -> bool:
    return not getattr(record, "progress", False)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA's max allocated on a GPU, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)
