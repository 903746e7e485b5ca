"""Sinusoid regression tasks (MAML paper, section 5.1)."""

from __future__ import annotations

import math

import pytest
import torch

from maml_cli.data import Sinusoid, SinusoidConfig
from maml_cli.errors import MamlError


@pytest.fixture
def sinusoid() -> Sinusoid:
    return Sinusoid(SinusoidConfig())


def test_tasks_are_k_support_points_and_separate_query_points_of_one_curve(sinusoid):
    batch = sinusoid.sampler("train", ways=1, shots=10, queries=15).sample(8)
    assert batch.x_support.shape == batch.y_support.shape == (8, 10, 1)
    assert batch.x_query.shape == batch.y_query.shape == (8, 15, 1)
    assert all(t.dtype == torch.float32 for t in (batch.x_support, batch.y_support, batch.x_query, batch.y_query))
    assert sinusoid.task_kind == "regression" and sinusoid.input_shape == (1,) and sinusoid.num_classes("train") == 0


def test_targets_are_amplitude_times_sine_of_x_minus_phase_with_the_reported_parameters(sinusoid):
    episodes = sinusoid.episodes("test", 5, 10, 20, num_tasks=50, seed=3)
    amplitude, phase = sinusoid.task_parameters("test", 10, 20, num_tasks=50, seed=3)
    for x, y in ((episodes.x_support, episodes.y_support), (episodes.x_query, episodes.y_query)):
        torch.testing.assert_close(y, amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1)))


def test_parameters_and_inputs_cover_the_paper_ranges(sinusoid):
    amplitude, phase = sinusoid.task_parameters("train", 5, 5, num_tasks=2000)
    x = sinusoid.episodes("train", 1, 5, 5, num_tasks=2000).x_query
    for values, low, high in ((amplitude, 0.1, 5.0), (phase, 0.0, math.pi), (x, -5.0, 5.0)):
        assert low <= values.min() < low + 0.05 * (high - low) and high - 0.05 * (high - low) < values.max() <= high


def test_configured_ranges_are_used_and_bad_ranges_refused():
    data = Sinusoid(SinusoidConfig(amplitude=[2.0, 2.0], phase=[0.0, 0.0], x_range=[0.0, 1.0]))
    batch = data.sampler("train", 1, 100, 1).sample(1)
    assert 0 <= batch.x_support.min() and batch.x_support.max() <= 1
    torch.testing.assert_close(batch.y_support, 2 * torch.sin(batch.x_support))
    with pytest.raises(MamlError, match=r"sinusoid x_range=\[5.0, -5.0\] must be two numbers \[low, high\]"):
        Sinusoid(SinusoidConfig(x_range=[5.0, -5.0]))


def test_fixed_episodes_are_deterministic_prefix_stable_and_ignore_ways(sinusoid):
    episodes = sinusoid.episodes("val", 5, 5, 10, num_tasks=30)
    again = Sinusoid(SinusoidConfig()).episodes("val", 1, 5, 10, num_tasks=12)
    assert torch.equal(again.x_support, episodes.x_support[:12]) and torch.equal(again.y_query, episodes.y_query[:12])
    assert not torch.equal(sinusoid.episodes("test", 5, 5, 10, num_tasks=30).x_support, episodes.x_support)


def test_sampler_reproduces_from_its_seed_and_state(sinusoid):
    a, b = sinusoid.sampler("train", 1, 5, 5, seed=4), sinusoid.sampler("train", 1, 5, 5, seed=4)
    assert torch.equal(a.sample(3).y_support, b.sample(3).y_support)
    state = a.state_dict()
    expected = a.sample(3)
    b.load_state_dict(state)
    assert torch.equal(b.sample(3).x_query, expected.x_query)


def test_shots_and_queries_must_be_positive(sinusoid):
    with pytest.raises(MamlError, match="shots must be a positive integer, got 0"):
        sinusoid.sampler("train", 1, 0, 5)
    with pytest.raises(MamlError, match="tasks must be a positive integer, got 0"):
        sinusoid.sampler("train", 1, 1, 5).sample(0)
