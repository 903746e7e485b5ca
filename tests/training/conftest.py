"""Fixtures of the training tests."""

import pytest

from tests.training.training_helpers import TINY, TINY_CONV


@pytest.fixture(scope="session")
def omniglot_overrides(omniglot_root) -> list[str]:
    """A tiny Omniglot run on the real data (cached once per session by the data layer)."""
    return ["dataset=omniglot", f"dataset.root={omniglot_root}", "dataset.download=false", *TINY, *TINY_CONV]
