"""Scoring with progress: the scores of ``evaluate``, a bar over the episodes on a terminal, log lines above it."""

import io
import logging
import sys

import pytest
import torch

from maml_cli.core import Engine
from maml_cli.runs.metrics import adaptation_curve, in_chunks
from maml_cli.runs.progress import progress_bar
from tests.core.core_helpers import classification_batch, learner, mlp


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """stderr as a terminal, from here to the end of the test (pytest's capture resets it between phases)."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.delenv("COLUMNS", raising=False)  # tqdm's width of a stream without a size: unlimited
    return screen


@pytest.fixture
def tasks():
    return classification_batch(tasks=8, shape=(4,))


def test_the_curve_with_a_bar_is_the_curve_of_evaluate_and_the_bar_counts_the_tasks(monkeypatch, tasks):
    terminal = on_terminal(monkeypatch)
    meta = learner(mlp(), eval_chunk=3, engine=Engine.loop)  # the chunks matter here, not the engine
    shown, plain = adaptation_curve(meta, tasks, steps=2, label="test tasks"), meta.evaluate(tasks, steps=2)
    assert torch.equal(shown.losses, plain.losses) and torch.equal(shown.accuracies, plain.accuracies)  # same chunks
    assert all(f"test tasks: {p:3d}%" in terminal.getvalue() for p in (0, 38, 75))  # after 0, 3 and 6 of 8 tasks


def test_a_bar_shows_only_on_a_terminal_and_only_where_asked(monkeypatch, tasks):
    terminal = on_terminal(monkeypatch)
    in_chunks(len, tasks, 3, "validation", show=False)  # torchrun ranks other than 0
    assert terminal.getvalue() == ""
    pipe = io.StringIO()  # a Slurm log, a test's captured output
    monkeypatch.setattr(sys, "stderr", pipe)
    assert in_chunks(len, tasks, 3, "validation") == [3, 3, 2] and pipe.getvalue() == ""


def test_a_stop_before_a_chunk_returns_none_and_an_empty_share_is_one_empty_chunk(tasks):
    scored = []
    assert (
        in_chunks(lambda chunk: scored.append(len(chunk)), tasks, 3, "validation", stop=lambda: len(scored) == 2)
        is None
    )
    assert scored == [3, 3]
    assert in_chunks(len, tasks[:0], 3, "validation") == [0]  # a rank's share of fewer episodes than ranks


def test_log_lines_go_above_the_bar_and_the_console_gets_its_stream_back(monkeypatch):
    terminal = on_terminal(monkeypatch)
    console = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(console)
    try:
        with progress_bar(8, "validation", "task") as bar:
            bar.update(3)
            logging.getLogger(__name__).warning("validation at step 10")
    finally:
        logging.getLogger().removeHandler(console)
    assert "\rvalidation at step 10\n" in terminal.getvalue()  # the bar was cleared first, not written onto
    assert console.stream is terminal
