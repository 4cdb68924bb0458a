"""Sliding PSN: a causal temporal convolution of order k shared by every neuron of a layer."""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import base
from torch import nn

from spikingjelly_psn import ops
from spikingjelly_psn.neuron import queue as q
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    autocast_dtype,
    check_input,
    check_positive_int,
)


class SlidingPSN(PSNFamilyMixin, base.MemoryModule):
    r"""``H[t] = Σ_i W_i · X[t−k+1+i]`` (zero before t = 0), ``S = Θ(H + b)``; any T.

    SpikingJelly's ``neuron.SlidingPSN``: the same arguments and defaults (``step_mode='s'``),
    parameters (``weight [k]``, scalar ``bias``), memory (``queue``) and state_dict keys. A
    multi-step call is one whole sequence (under autocast it runs in the autocast dtype, as
    SpikingJelly's ``addmm`` does); single steps queue the last ``k`` inputs until ``reset()``, with
    gradients through them. ``streaming=True`` makes consecutive multi-step calls chunks of one
    sequence.

    ``backend='gemm'`` and ``'conv'``, the formulations of SpikingJelly 0.0.0.0.14's SlidingPSN
    (scripts written for it pass them), both mean the torch backend, which computes the ``gemm``
    formulation.
    """

    backend_aliases = {"gemm": "torch", "conv": "torch"}

    def __init__(
        self,
        k: int,
        exp_init: bool = True,
        surrogate_function=None,
        step_mode: str = "s",
        backend: str = "torch",
        v_threshold: float = 1.0,
        streaming: bool = False,
        **reset_kwargs,
    ):
        super().__init__()
        self.register_memory("queue", [])
        self.k = check_positive_int("k", k, "SlidingPSN")
        self.streaming = bool(streaming)
        if exp_init:
            weight = torch.exp2(torch.arange(-(k - 1), 1, dtype=torch.float32))
        else:
            weight = torch.ones([1, k])
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            weight = weight[0]
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.as_tensor(-float(v_threshold)))
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)

    def gen_gemm_weight(self, T: int) -> torch.Tensor:
        """The ``[T, T]`` banded matrix with ``H = gen_gemm_weight(T) @ X`` (SpikingJelly's)."""
        lag = torch.arange(T, device=self.weight.device)
        lag = lag.view(-1, 1) - lag.view(1, -1)  # i - j
        band = (lag >= 0) & (lag < self.k)
        taps = self.weight[(self.k - 1 - lag).clamp(0, self.k - 1)]
        return torch.where(band, taps, torch.zeros((), dtype=taps.dtype, device=taps.device))

    def single_step_functional_forward(self, inputs, states, **kwargs):
        x = inputs[0]
        check_input(x, "SlidingPSN", 1, "[N, *]")
        (queue,) = states
        q.check_queue(queue, x.shape, "SlidingPSN")
        queue = q.push(queue, x, self.k)
        weight = self.weight[self.k - len(queue) :].unsqueeze(-1)
        h = torch.sum(weight * torch.stack(queue), 0)
        spike = self.surrogate_function(h + self.bias)
        return (spike.view(x.shape),), (queue,)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "SlidingPSN", 2, "[T, N, *]")
        (queue,) = states
        history = None
        if self.streaming:
            history, queue = q.continue_stream(queue, x_seq, self.k - 1, self.k, "SlidingPSN")
            states = (queue,)
        if x_seq.shape[0] == 0:
            return (torch.empty_like(x_seq),), states
        x, weight, bias = x_seq, self.weight, self.bias
        dtype = autocast_dtype(x_seq)
        if dtype is not None:  # what SpikingJelly's addmm does under autocast
            x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
        as_conv = (x.shape[0], 1, 1, -1)
        spikes = ops.causal_conv_fire(
            x.reshape(as_conv),
            weight.view(1, -1),
            bias.view(1),
            1,
            self.surrogate_function,
            None if history is None else history.reshape((self.k - 1, 1, 1, -1)),
            backend=self.backend,
        )
        return (spikes.view(x.shape),), states

    def extra_repr(self) -> str:
        return f"k={self.k}, {self._family_repr()}"
