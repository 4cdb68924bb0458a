"""torchrun / DDP plumbing: process group, ranks, samplers, metric reduction."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch.utils.data import Sampler


@dataclass
class DistInfo:
    """Where this process sits in the job (``world == 1`` for a plain run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """Where torchrun put this process (``world == 1`` for a plain run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun job when there is one: NCCL on CUDA, gloo on CPU."""
    if info.enabled and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def wait_for_all(info: DistInfo) -> None:
    """Block until every rank gets here (rank 0 may still be writing checkpoints and plots)."""
    if info.enabled and tdist.is_initialized():
        tdist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` gets indices ``r, r+world, ...`` (no padding, no repeats)."""

    def __init__(self, n: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, n, info.world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return t.tolist()
