"""The queue of earlier inputs a causal neuron keeps between calls, as SpikingJelly's PSNs keep it.

Entries are flattened inputs, oldest first. In single-step mode they keep their graph, so gradients
flow back through earlier steps of a sequence (SpikingJelly's semantics); chunks of a stream are
queued as data. Functions return new lists: functional forwards must not mutate their states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_queue(queue: Sequence[torch.Tensor], step_shape: torch.Size, cls_name: str) -> None:
    """The queued inputs must have as many values per step as a step shaped ``step_shape``."""
    values = math.prod(step_shape)
    if queue and queue[-1].numel() != values:
        raise ValueError(
            f"{cls_name} holds earlier inputs of a sequence with {queue[-1].numel()} values per "
            f"step, but this step has {values} (shape {tuple(step_shape)}): the batch size or "
            "feature shape changed inside a sequence. Call "
            "spikingjelly.activation_based.functional.reset_net(net) before each new sequence."
        )


def push(queue: Sequence[torch.Tensor], x: torch.Tensor, length: int) -> list[torch.Tensor]:
    """``queue`` with ``x.flatten()`` appended, keeping the newest ``length`` entries."""
    return [*queue, x.flatten()][-length:]


def extend(queue: Sequence[torch.Tensor], x_seq: torch.Tensor, length: int) -> list[torch.Tensor]:
    """``queue`` after a chunk ``x_seq`` of a stream, keeping the newest ``length`` steps as data."""
    newest = x_seq.detach()[-length:].flatten(1).clone()
    return [*queue, *newest.unbind(0)][-length:]


def window(queue: Sequence[torch.Tensor], length: int, step: torch.Tensor) -> torch.Tensor:
    """The newest ``length`` queued inputs as ``[length, *step.shape]``, zeros before the first."""
    steps = [q.view(step.shape).to(step.dtype) for q in queue[max(0, len(queue) - length) :]]
    missing = length - len(steps)
    if missing:
        steps = [*step.new_zeros((missing, *step.shape)).unbind(0), *steps]
    return torch.stack(steps)


def continue_stream(
    queue: Sequence[torch.Tensor], x_seq: torch.Tensor, lag: int, keep: int, cls_name: str
) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """For a streamed chunk ``x_seq``: the ``lag`` inputs before it (None at a stream's start),
    as data, and the queue after it (the newest ``keep`` steps)."""
    check_queue(queue, x_seq.shape[1:], cls_name)
    history = None
    if queue and lag and len(x_seq):
        history = window(queue, lag, x_seq[0]).detach()
    return history, extend(queue, x_seq, keep)
