"""Stopping training cleanly on a signal: SIGTERM, SIGUSR1 (a scheduler's notice before preemption), SIGINT (Ctrl-C).

While training, these signals only set a flag. The loop checks it once per meta-step (and between
chunks of evaluation episodes), saves ``checkpoints/last.pt`` and raises :class:`Interrupted`; the
W&B run is closed as preempted or interrupted, and the command exits with status 128 + the signal
number. The same signal again, a second or more later, exits at once (quicker repeats are taken for
one: torchrun, and Slurm, also pass on the signal that the whole process group got). In a submitit
job, its preemption signal (``USR2`` unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) is handled
too, and then handed on to submitit, which requeues the job.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

REPEAT_S = 1.0  # a repeated signal exits at once only this long after the first


class Interrupted(Exception):
    """Training stopped on signal ``signum`` after meta-step ``step``, with ``last`` (checkpoints/last.pt) saved."""

    def __init__(self, signum: int, step: int, last: Path, signals: StopSignals):
        self.signum, self.step, self.last, self.signals = signum, step, last, signals
        super().__init__(
            f"{signal.Signals(signum).name}: stopped after meta-step {step}, saved {last}; "
            f"continue with hydra.run.dir={last.parent.parent} resume=true"
        )

    @property
    def status(self) -> str:
        """``interrupted`` (Ctrl-C) or ``preempted`` (a scheduler's signal)."""
        return "interrupted" if self.signum == signal.SIGINT else "preempted"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def hand_over(self) -> None:
        """Pass each signal received to the Python handler it had before training, if any (submitit's requeues
        the job and exits)."""
        for signum in self.signals.received:
            handler = self.signals.previous.get(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                handler(signum, None)


class StopSignals:
    """Within ``with``, the stop signals are recorded in ``received`` (in order, once each) instead of acting.

    The handlers in place before are restored on exit (and kept in ``previous``). Outside the main
    thread, where Python cannot handle signals, it does nothing.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.previous: dict[int, Any] = {}
        self._first = 0.0  # when the first signal came (monotonic seconds)

    @property
    def signum(self) -> int:
        """The first signal received (0: none)."""
        return self.received[0] if self.received else 0

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _stop_signals():
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: one set outside Python

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self.received:
            self._first = self._first or time.monotonic()
            self.received.append(signum)
        elif time.monotonic() - self._first >= REPEAT_S:
            os.write(2, f"{signal.Signals(signum).name} again: exiting now, without saving\n".encode())
            os._exit(128 + signum)


def _stop_signals() -> list[int]:
    signals = [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit import JobEnvironment

        signals.append(signal.Signals[f"SIG{JobEnvironment.USR_SIG}"])
    return list(dict.fromkeys(signals))
