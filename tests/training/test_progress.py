"""Progress: a live bar on a terminal, one plain line per interval elsewhere, always in the log; training's clock."""

import io
import logging

import pytest
import torch

from maml_cli.training import progress as progress_module
from maml_cli.training.progress import Progress, Stopwatch, peak_memory_mb


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


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The stopwatch's clock, set by hand."""
    seconds = [100.0]
    monkeypatch.setattr(progress_module, "now", lambda: seconds[0])
    return seconds


def test_the_stopwatch_adds_this_process_time_to_the_time_spent_before_until_stopped(clock):
    watch = Stopwatch(limit_s=60.0, spent_s=40.0)
    clock[0] += 15
    assert (watch.elapsed(), watch.left(), watch.exhausted()) == (55.0, 5.0, False)
    clock[0] += 10
    assert (watch.elapsed(), watch.left(), watch.exhausted()) == (65.0, 0.0, True)
    watch.stop()
    clock[0] += 1000  # the final test: not counted
    assert watch.elapsed() == 65.0 and Stopwatch().left() == float("inf")


def test_the_eta_is_the_sooner_of_the_last_step_and_the_end_of_the_time_budget(caplog, clock):
    with caplog.at_level(logging.INFO), Progress(total=100, start=40, stopwatch=Stopwatch(20.0)) as progress:
        progress.advance()
        progress.report({"loss": 1.25}, rate=2.0)  # 59 steps at 2 steps/s: 29.5 s, but 20 s are left
        progress.report({"loss": 1.25}, rate=4.0)  # 59 steps at 4 steps/s: 14.75 s, rounded to 15
    assert "| ETA 0:00:20" in caplog.messages[0] and "| ETA 0:00:15" in caplog.messages[1]


def test_the_bar_shows_the_budget_left_as_its_eta_before_the_speed_is_known(clock):
    budget, no_budget = Terminal(), Terminal()
    with Progress(total=100, start=40, stream=budget, stopwatch=Stopwatch(20.0)):
        assert "40/100 [" in budget.getvalue() and "<00:20, " in budget.getvalue()  # no step yet: ETA = budget
    with Progress(total=100, start=40, stream=no_budget):
        assert "40/100 [" in no_budget.getvalue() and "<?, " in no_budget.getvalue()


def test_peak_memory_is_reported_in_megabytes():
    assert 10 < peak_memory_mb(torch.device("cpu")) < 1e6
