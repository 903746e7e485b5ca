"""Tiny trained runs shared by the evaluation tests: each is trained once per session with ``maml-train``."""

import pytest

from tests.evaluation.evaluation_helpers import cli

TINY = ["meta_batch_size=2", "log_every=2", "val_every=2", "val_tasks=4", "algorithm.eval_steps=2"]


@pytest.fixture(scope="session")
def sinusoid_run(tmp_path_factory):
    """A sinusoid regression run of 4 meta-steps, in experiment (W&B group) ``tiny-sinusoid``."""
    out = tmp_path_factory.mktemp("sinusoid-run")
    cli(
        "train",
        "dataset=sinusoid",
        "iterations=4",
        "test_tasks=4",
        "name=tiny-sinusoid",
        *TINY,
        f"hydra.run.dir={out}",
        cwd=out,
    )
    return out


@pytest.fixture(scope="session")
def omniglot_run(tmp_path_factory, omniglot_root):
    """A 5-way 1-shot Omniglot run of 2 meta-steps (Conv4 with 8 filters), group ``tiny-omniglot``."""
    out = tmp_path_factory.mktemp("omniglot-run")
    cli(
        "train",
        "dataset=omniglot",
        f"dataset.root={omniglot_root}",
        "dataset.download=false",
        "iterations=2",
        "test_tasks=0",
        "queries=2",
        "model.hidden=8",
        "name=tiny-omniglot",
        *TINY,
        f"hydra.run.dir={out}",
        cwd=out,
    )
    return out
