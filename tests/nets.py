"""Small SpikingJelly nets around each plugin neuron, for the tests of how they fit the tools."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN

T = 6
CLASSES = (PSN, MaskedPSN, SlidingPSN, MFPSN)
STATEFUL = (MaskedPSN, SlidingPSN, MFPSN)


def make_neuron(cls: type, **kwargs) -> nn.Module:
    """One multi-step neuron of ``cls`` with the constructor arguments this file uses."""
    own = {
        PSN: {"T": T},
        MaskedPSN: {"k": 3, "T": T, "lambda_init": 0.5, "step_mode": "m"},
        SlidingPSN: {"k": 3, "step_mode": "m"},
        MFPSN: {"k": 2, "dilation": 2, "step_mode": "m"},
    }[cls]
    return cls(**{**own, **kwargs})


def make_net(cls: type, **kwargs) -> nn.Sequential:
    """Conv, batch norm, neuron, then a linear layer and a second neuron, in multi-step mode.

    The linear weights are scaled up so that the second neuron fires too.
    """
    fc = layer.Linear(4 * 6 * 6, 5)
    nn.init.uniform_(fc.weight, -0.5, 0.5)
    net = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),
        make_neuron(cls, **kwargs),
        layer.Flatten(),
        fc,
        make_neuron(cls, **kwargs),
    )
    functional.set_step_mode(net, "m")
    return net


def make_input(batch: int = 3) -> torch.Tensor:
    return torch.randn(T, batch, 2, 6, 6) * 2.0


def ready(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Materialise lazy parameters (MFPSN) as users must before building an optimizer."""
    return spikingjelly_psn.materialize(net, x)


def causal_neuron(cls: type) -> nn.Module:
    """A streaming neuron that continues a sequence across calls (λ = 1, MFPSN in eval)."""
    m = make_neuron(cls, streaming=True)
    if cls is MaskedPSN:
        m.lambda_ = 1.0
    if cls is MFPSN:
        m.materialize_channels(2)
        m.eval()
    return m
