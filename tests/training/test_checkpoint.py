"""Checkpoint files: atomic, safe to load, and complete enough to continue every random stream."""
import random

import numpy as np
import pytest
import torch

from maml_cli.data import Sinusoid
from maml_cli.data.config import SinusoidConfig
from maml_cli.errors import MamlError
from maml_cli.training import FORMAT, load_checkpoint, save_checkpoint
from maml_cli.training.checkpoint import find_checkpoint, restore_rng, rng_state


@pytest.fixture
def sampler():
    return Sinusoid(SinusoidConfig()).sampler("train", ways=1, shots=5, queries=5, seed=3)


def draw_everything(sampler):
    return (random.random(), np.random.rand(), torch.rand(2), sampler.sample(2).x_support)


def test_a_checkpoint_round_trips_with_weights_only(tmp_path, sampler):
    state = {"step": 7, "learner": {"w": torch.arange(3.0)}, "rng": rng_state(sampler), "best": {"value": None}}
    save_checkpoint(tmp_path / "ckpt" / "last.pt", state)
    loaded = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert loaded["format"] == FORMAT and loaded["step"] == 7
    assert torch.equal(load_checkpoint(tmp_path / "ckpt" / "last.pt")["learner"]["w"], torch.arange(3.0))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.pt"]  # no temporary file left behind


def test_restored_rng_states_continue_every_stream(sampler):
    saved = rng_state(sampler)
    expected = draw_everything(sampler)
    draw_everything(sampler)
    restore_rng(saved, sampler)
    again = draw_everything(sampler)
    assert again[:2] == expected[:2]
    assert torch.equal(again[2], expected[2]) and torch.equal(again[3], expected[3])


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    monkeypatch.setattr("os.replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(MamlError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "good.pt", {"learner": {"w": torch.zeros(1000)}})
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MamlError, match="truncated, corrupt or not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(MamlError, match="is not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": FORMAT, "code": np.dtype("float32")}, tmp_path / "unsafe.pt")  # needs full unpickling
    with pytest.raises(MamlError, match="not a maml-cli checkpoint"):
        load_checkpoint(tmp_path / "unsafe.pt")


def test_resume_finds_the_checkpoint_it_names(tmp_path):
    run = tmp_path / "run"
    assert find_checkpoint(None, run) is None and find_checkpoint("false", run) is None
    assert find_checkpoint("True", run) is None  # nothing yet: start afresh (a re-queued job's first try)
    save_checkpoint(run / "checkpoints" / "last.pt", {"step": 3})
    assert find_checkpoint("true", run) == run / "checkpoints" / "last.pt"
    assert find_checkpoint(str(run), tmp_path / "other") == run / "checkpoints" / "last.pt"
    assert find_checkpoint(str(run / "checkpoints" / "last.pt"), tmp_path) == run / "checkpoints" / "last.pt"
    with pytest.raises(MamlError, match="no such checkpoint file or run directory"):
        find_checkpoint(str(tmp_path / "nowhere"), run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MamlError, match="no checkpoints/last.pt in that directory"):
        find_checkpoint(str(tmp_path / "empty"), run)
