"""The optimizer and the learning-rate schedule a config asks for."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def build_optimizer(o: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum, AdamW or Adam over every parameter of ``model``."""
    params = model.parameters()
    if o.name == "sgd":
        return torch.optim.SGD(params, o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, o.lr, weight_decay=o.weight_decay)


def build_scheduler(
    o: OptimConfig, epochs: int, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """A linear warm-up over ``optim.warmup_epochs``, then cosine decay (or constant), per epoch."""
    warm = min(o.warmup_epochs, epochs - 1)

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        if o.scheduler == "none":
            return 1.0
        span = max(epochs - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
