"""The train and test loaders of a run: sharded over DDP ranks, workers fitted to the CPUs."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .config import Config
from .data import DataBundle
from .dist import DistInfo, ShardSampler
from .machine import clamp_workers, local_world_size


def worker_count(asked: int, info: DistInfo) -> int:
    """``data.num_workers``, lowered to the CPUs there are (more only queue for them)."""
    workers = clamp_workers(asked)
    if workers < asked and info.is_main:
        local = local_world_size()
        shared = f", shared by its {local} processes" if local > 1 else ""
        print(f"note: data.num_workers={asked} lowered to {workers}, the CPUs here{shared}")
    return workers


def build_loaders(
    cfg: Config, data: DataBundle, info: DistInfo, device: torch.device
) -> tuple[DistributedSampler, DataLoader, DataLoader]:
    """The training sampler (its epoch is set each epoch), the training and the test loader."""
    d = cfg.data
    workers = worker_count(d.num_workers, info)
    sampler = DistributedSampler(
        data.train, num_replicas=info.world, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    pin = device.type == "cuda"
    train = DataLoader(
        data.train,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        drop_last=len(data.train) // info.world > d.batch_size,
    )
    test = DataLoader(
        data.test,
        batch_size=d.test_batch_size or d.batch_size,
        sampler=ShardSampler(len(data.test), info),
        num_workers=workers,
        pin_memory=pin,
    )
    return sampler, train, test
