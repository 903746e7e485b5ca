"""Task-parallel primitives: N gloo processes make the update of one process on the whole meta-batch;
a stalled rank fails the others after the timeout; submitit jobs of several tasks form a group too."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maml_cli.core import InnerLoopConfig, MetaLearner, TaskBatch
from maml_cli.errors import MamlError
from maml_cli.models import Conv4
from maml_cli.training.distributed import Distributed, init_distributed, shutdown_distributed

TASKS = 4


def meta_batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(TASKS, 2)
    images = torch.rand(2, TASKS, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    return TaskBatch(images[0], labels, images[1], labels)


def learner() -> MetaLearner:
    torch.manual_seed(0)
    return MetaLearner(Conv4(3, hidden=4, image_size=8), inner=InnerLoopConfig(steps=1, engine="loop")).double()


def _rank(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed(torch.device("cpu"), timeout_s=60)
    model, batch = learner(), meta_batch()
    model.meta_backward(ctx.local_batch(batch))
    ctx.all_reduce_gradients(model.parameters())
    curve = torch.arange(5.0)[ctx.episode_share(5)] + 10 * rank
    gathered = ctx.gather_episodes(curve, 5)
    if ctx.is_main:
        torch.save({"grads": [p.grad for p in model.parameters() if p.grad is not None], "gathered": gathered}, out)
    shutdown_distributed()


def test_two_processes_make_the_single_process_meta_gradient(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_rank, args=(2, 29511, out), nprocs=2, start_method="spawn")
    distributed = torch.load(out)

    single = learner()
    single.meta_backward(meta_batch())
    expected = [p.grad for p in single.parameters() if p.grad is not None]
    for got, want in zip(distributed["grads"], expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert distributed["gathered"].tolist() == [0.0, 1.0, 2.0, 13.0, 14.0]


def test_each_rank_takes_a_disjoint_contiguous_share():
    shares = [Distributed(rank, 4).share(32) for rank in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 8), (8, 16), (16, 24), (24, 32)]


def test_a_meta_batch_not_divisible_by_the_world_size_is_refused():
    with pytest.raises(MamlError, match="meta_batch_size=30 is not divisible by the 4 processes"):
        Distributed(0, 4).check_meta_batch(30)


def _stalling_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed(torch.device("cpu"), timeout_s=2)
    if rank == 1:  # alive but stuck: never joins the next collective
        while not os.path.exists(out):
            time.sleep(0.05)
        return
    try:
        ctx.average([torch.ones(3)])
    except MamlError as error:
        with open(out, "w") as file:
            file.write(str(error))


def test_a_stalled_rank_makes_the_others_fail_clearly_after_the_timeout(tmp_path):
    out = str(tmp_path / "error.txt")
    started = time.monotonic()
    mp.start_processes(_stalling_rank, args=(29512, out), nprocs=2, start_method="spawn")
    message = open(out).read()
    assert (
        message.startswith(
            "process 0 of 2 lost the others: one of them failed or did not answer within dist_timeout_s=2 s"
        )
        and "Timed out" in message
    )
    assert time.monotonic() - started < 60


def test_a_multi_task_submitit_job_exports_torchruns_variables(monkeypatch):
    """``hydra.launcher.tasks_per_node=2``: submitit's task variables stand in for torchrun's."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so that the variables exported below are removed afterwards
        monkeypatch.delenv(key)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    task = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "1234",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
    }
    for key, value in task.items():
        monkeypatch.setenv(key, value)
    ctx = init_distributed(torch.device("cpu"), timeout_s=5)
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.timeout_s) == (1, 2, 1, 5)
    assert os.environ["MASTER_ADDR"] and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000


def test_a_single_task_submitit_job_stays_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert init_distributed(torch.device("cpu")) == Distributed()


def test_the_timeout_must_be_positive():
    from tests.training.training_helpers import config  # not at the top: spawned ranks import this module

    with pytest.raises(MamlError, match="dist_timeout_s=0.0 is out of range"):
        config("dist_timeout_s=0")
