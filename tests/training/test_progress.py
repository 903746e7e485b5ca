"""Progress: a live bar on a terminal, one plain line per interval elsewhere, always in the log."""

import io
import logging

import torch

from maml_cli.training.progress import Progress, peak_memory_mb


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_the_metrics_speed_and_eta(caplog):
    screen = Terminal()
    with caplog.at_level(logging.INFO), Progress(total=10, start=0, stream=screen) as progress:
        for _ in range(5):
            progress.advance()
        progress.report({"loss": 0.5, "acc": 0.75}, rate=progress.rate())
    assert "loss=0.5" in screen.getvalue() and "acc=0.75" in screen.getvalue() and "step/s" in screen.getvalue()
    assert "step 5/10 | loss 0.5 | acc 0.75 |" in caplog.text  # the job log keeps the line


def test_elsewhere_each_interval_is_one_plain_line_with_speed_and_eta(caplog):
    pipe = io.StringIO()
    with caplog.at_level(logging.INFO), Progress(total=100, start=40, stream=pipe) as progress:
        progress.advance()
        progress.report({"loss": 1.25}, rate=2.0)
    assert pipe.getvalue() == ""  # no bar
    assert "step 41/100 | loss 1.25 | 2.00 steps/s | ETA 0:00:30" in caplog.text


def test_peak_memory_is_reported_in_megabytes():
    assert 10 < peak_memory_mb(torch.device("cpu")) < 1e6
