"""Materialising MFPSN's lazily created per-channel parameters before training starts."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn


def materialize(net: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """Create every lazy parameter of ``net`` with one no-grad forward of ``example_input``.

    The forward runs in eval mode, so no running statistics change; train/eval flags are restored
    and the neuron states reset. Call it before building the optimizer or wrapping in DDP.
    """
    modes = {module: module.training for module in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            net(example_input)
    finally:
        for module, training in modes.items():
            module.training = training
        functional.reset_net(net)
    return net
