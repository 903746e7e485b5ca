"""Task-parallel meta-training over processes with ``torch.distributed`` (torchrun, or Slurm via submitit).

Every rank draws the same meta-batch (same sampler seed) and meta-trains on its own contiguous
share of the tasks; the meta-gradients are all-reduced and divided by the number of ranks, so N
processes make the update that one process makes on the whole meta-batch (up to the order of the
floating-point sums). gloo carries CPU tensors, NCCL CUDA tensors. Every collective has a timeout:
a rank that dies or stalls makes the others fail after ``timeout_s`` instead of hanging.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from maml_cli.core import TaskBatch
from maml_cli.errors import MamlError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size`` (1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = 600.0  # how long a collective waits for the other ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def share(self, tasks: int) -> slice:
        """This rank's contiguous slice of a meta-batch of ``tasks`` tasks."""
        per_rank = tasks // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def check_meta_batch(self, meta_batch_size: int) -> None:
        if meta_batch_size % self.world_size:
            valid = [n for n in range(self.world_size, 4 * self.world_size + 1, self.world_size)]
            raise MamlError(
                f"meta_batch_size={meta_batch_size} is not divisible by the {self.world_size} processes; "
                f"use a multiple of {self.world_size}, e.g. {valid}"
            )

    def local_batch(self, batch: TaskBatch) -> TaskBatch:
        return batch[self.share(len(batch))] if self.enabled else batch

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` (or ``auto`` on a GPU machine) is ``cuda:{local_rank}``.

        When each process sees a single GPU (Slurm's per-task binding), that GPU is ``cuda:0``.
        """
        if device.type != "cuda" or device.index is not None or not self.enabled:
            return device
        count = torch.cuda.device_count()
        index = 0 if count == 1 else self.local_rank
        if index >= count:
            raise MamlError(
                f"process {self.rank} has local rank {self.local_rank} but this node has {count} GPUs; "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", index)

    # ------------------------------------------------------------------ collectives (no-ops on one process)
    def average(self, tensors: Iterable[Tensor]) -> None:
        """Replace each tensor (in place) by its mean over the ranks: one flat all-reduce per dtype."""
        if not self.enabled:
            return
        by_kind: dict[tuple, list[Tensor]] = {}
        for t in tensors:
            by_kind.setdefault((t.dtype, t.device), []).append(t)
        for group in by_kind.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            with self._collective():
                dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def all_reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average each rank's mean-over-its-tasks meta-gradient into the mean over all tasks."""
        self.average([p.grad for p in params if p.grad is not None])

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over the ranks (a new tensor)."""
        value = value.clone()
        self.average([value])
        return value

    def min(self, value: Tensor) -> Tensor:
        """The minimum of ``value`` over the ranks (a new tensor)."""
        value = value.clone()
        if self.enabled:
            with self._collective():
                dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable), on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        with self._collective():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's (in place)."""
        if not self.enabled:
            return
        with torch.no_grad(), self._collective():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            with self._collective():
                dist.barrier()

    @contextmanager
    def _collective(self) -> Iterator[None]:
        """A failed collective (a rank died, or stalled past the timeout) as one clear MamlError."""
        try:
            yield
        except RuntimeError as error:  # gloo: timeouts and closed connections (NCCL aborts the process instead)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise MamlError(
                f"process {self.rank} of {self.world_size} lost the others: one of them failed or did "
                f"not answer within dist_timeout_s={self.timeout_s:g} s (see its output). "
                f"Cause: {reason}"
            ) from None

    # ------------------------------------------------------------------ evaluation episodes
    def episode_share(self, episodes: int) -> slice:
        """This rank's contiguous slice of ``episodes`` evaluation tasks (the last may be shorter)."""
        per_rank = -(-episodes // self.world_size)
        return slice(min(self.rank * per_rank, episodes), min((self.rank + 1) * per_rank, episodes))

    def gather_episodes(self, values: torch.Tensor, episodes: int) -> torch.Tensor:
        """All ranks' per-episode ``values`` (from ``episode_share``), in episode order."""
        if not self.enabled:
            return values
        per_rank = -(-episodes // self.world_size)
        padding = values.new_full((per_rank - len(values), *values.shape[1:]), float("nan"))
        padded = torch.cat([values, padding]).contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with self._collective():
            dist.all_gather(parts, padded)
        return torch.cat(parts)[:episodes]


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> Distributed:
    """Join the process group that torchrun (or a multi-task submitit/Slurm job) describes, if any.

    The group gets a gloo backend for CPU tensors and, where CUDA is present, NCCL for CUDA
    tensors, so it serves whichever device the run ends up on. ``timeout_s`` bounds every
    collective: a dead or stuck rank makes the others raise instead of waiting forever.
    """
    if "WORLD_SIZE" not in os.environ:
        _export_submitit_environment()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    ctx = Distributed(rank, world_size, local_rank, timeout_s)
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.device(device))
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except RuntimeError as error:  # the store at MASTER_ADDR:MASTER_PORT, or the other ranks, did not answer
            where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            raise MamlError(
                f"process {rank} of {world_size} could not join the others at {where} within "
                f"dist_timeout_s={timeout_s:g} s: {str(error).strip().splitlines()[0]}"
            ) from None
        atexit.register(shutdown_distributed)
    return ctx


def _export_submitit_environment() -> None:
    """A submitit job with several tasks (``hydra.launcher.tasks_per_node``): one process per task.

    submitit describes the job in ``SLURM_*`` (or ``SUBMITIT_LOCAL_*``) variables; its helper
    exports the ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` of torchrun.
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
