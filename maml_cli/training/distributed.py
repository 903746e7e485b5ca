"""Task-parallel meta-training over processes with ``torch.distributed`` (launched by torchrun).

Every rank draws the same meta-batch (same sampler seed) and meta-trains on its own contiguous
share of the tasks; the meta-gradients are all-reduced and divided by the number of tasks, so N
processes make exactly the update that one process makes on the whole meta-batch. gloo on CPU,
NCCL on CUDA. A rank that dies makes the others fail after ``timeout`` instead of hanging.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from maml_cli.data.tasks import TaskBatch
from maml_cli.errors import MamlError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size`` (1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
        return batch[self.share(len(batch))]

    def all_reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average each rank's mean-over-its-tasks meta-gradient into the mean over all tasks."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

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
        dist.all_gather(parts, padded)
        return torch.cat(parts)[:episodes]


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> Distributed:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Distributed(rank, world_size, local_rank)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
