"""Opting a whole net into streaming: multi-step calls as consecutive chunks of one sequence."""

from __future__ import annotations

from torch import nn


def set_streaming(net: nn.Module, enabled: bool = True) -> int:
    """Set ``streaming`` on every plugin neuron of ``net`` that has it; return how many.

    With ``streaming`` on, a causal neuron (masked PSN at λ = 1, sliding PSN, MFPSN) keeps the
    inputs it needs from one multi-step call for the next, so a long sequence fed in chunks
    gives the spikes of one call, until ``functional.reset_net(net)``. Off (the default, as
    SpikingJelly), every multi-step call is a whole sequence of its own.
    """
    count = 0
    for module in net.modules():
        if isinstance(getattr(module, "streaming", None), bool):
            module.streaming = bool(enabled)
            count += 1
    return count
