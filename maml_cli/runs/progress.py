"""Progress bars on a terminal, and console log lines that go above them rather than onto them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm


def shows_bar(stream: TextIO, show: bool = True) -> bool:
    """Whether a bar goes on ``stream``: only on a terminal (files and pipes get no bar, so logs are not flooded)."""
    return show and stream.isatty()


@contextmanager
def progress_bar(total: int, label: str, unit: str, stream: TextIO | None = None, show: bool = True, **options: Any):
    """A tqdm bar of ``total`` ``unit``s on ``stream`` (default stderr) if it is a terminal and ``show``.

    While it is open, console log lines are written above the bars (see ``lines_above_bars``). ``options`` go to
    tqdm (e.g. ``initial``, ``leave``, ``tqdm_class``).
    """
    stream = stream or sys.stderr
    bar_class = options.pop("tqdm_class", tqdm)
    bar = bar_class(
        total=total,
        desc=label,
        unit=unit,
        file=stream,
        dynamic_ncols=True,
        disable=not shows_bar(stream, show),
        **options,
    )
    with bar, lines_above_bars(enabled=not bar.disable):
        yield bar


@contextmanager
def lines_above_bars(enabled: bool = True) -> Iterator[None]:
    """Within it, the root logger's console handlers (stdout, stderr) write with ``tqdm.write``, above any bar.

    Their formatters, levels and filters stay; nested uses leave the handlers to the outermost one.
    """
    handlers = [
        h
        for h in logging.getLogger().handlers
        if enabled and type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)
    ]
    for handler in handlers:
        handler.setStream(_AboveBars(handler.stream))
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(handler.stream.console)


class _AboveBars:
    """A console stream whose writes clear the bars, go out, and redraw the bars below them."""

    def __init__(self, console: TextIO):
        self.console = console

    def write(self, text: str) -> None:
        tqdm.write(text, file=self.console, end="")

    def flush(self) -> None:
        self.console.flush()
