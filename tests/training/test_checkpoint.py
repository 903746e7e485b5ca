"""Training checkpoints: complete enough to continue every random stream, found and checked for resuming."""

import random

import numpy as np
import pytest
import torch

from maml_cli.data import Sinusoid, SinusoidConfig
from maml_cli.errors import MamlError
from maml_cli.runs import FORMAT, load_checkpoint, save_checkpoint
from maml_cli.runtime import build_learner
from maml_cli.training.resume import check_weights, find_checkpoint, load_resumable
from maml_cli.training.rng import restore_rng, rng_state
from tests.training.training_helpers import config


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


def test_a_checkpoint_that_cannot_be_resumed_is_named_with_what_is_wrong(tmp_path, sampler):
    dataset = Sinusoid(SinusoidConfig())
    learner = build_learner(config("model.hidden=[8,8]"), dataset)
    state = {
        "config": {"model": {"name": "mlp", "hidden": [8, 8]}},
        "learner": learner.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "step": 3,
        "best": {},
        "rng": rng_state(sampler),
        "wandb": {},
        "history": [],
    }
    save_checkpoint(tmp_path / "good.pt", state)
    check_weights(tmp_path / "good.pt", load_resumable(tmp_path / "good.pt"), learner)

    save_checkpoint(tmp_path / "partial.pt", {k: v for k, v in state.items() if k not in ("learner", "rng")})
    with pytest.raises(
        MamlError,
        match=rf"^checkpoint {tmp_path / 'partial.pt'} cannot be resumed: it lacks "
        r"learner, rng \(a training checkpoint holds config, learner, ",
    ):
        load_resumable(tmp_path / "partial.pt")
    wider = build_learner(config("model.hidden=[16,8]"), dataset)
    with pytest.raises(MamlError) as error:
        check_weights(tmp_path / "good.pt", state, wider)
    assert str(error.value) == (
        f"checkpoint {tmp_path / 'good.pt'}: its weights do not fit the model of its own "
        "config (name=mlp hidden=[8, 8]): "
        "model.body.1.weight has shape [8, 1], the model's [16, 1]; "
        "model.body.1.bias has shape [8], the model's [16]; "
        "model.body.3.weight has shape [8, 8], the model's [8, 16]"
    )
