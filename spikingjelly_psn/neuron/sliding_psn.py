"""Sliding PSN: a causal temporal convolution of order k shared by every neuron of a layer."""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import base
from torch import nn

from spikingjelly_psn import ops
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    check_history,
    check_input,
    check_positive_int,
    next_history,
)


class SlidingPSN(PSNFamilyMixin, base.MemoryModule):
    r"""``H[t] = Σ_i W_i · X[t−k+1+i]`` (zero before t = 0), ``S = Θ(H + b)``; any T.

    Same parameters (``weight [k]``, scalar ``bias``) and state_dict keys as SpikingJelly's
    ``neuron.SlidingPSN``; outputs equal up to float rounding (a convolution instead of a
    ``[T, T]`` Toeplitz matrix). Consecutive calls continue one sequence (the last ``k−1`` inputs
    are kept) until ``reset()``, so chunks and single steps give the spikes of one call.
    """

    def __init__(
        self,
        k: int,
        exp_init: bool = True,
        surrogate_function=None,
        step_mode: str = "m",
        backend: str = "torch",
        v_threshold: float = 1.0,
        **reset_kwargs,
    ):
        super().__init__()
        self.k = check_positive_int("k", k, "SlidingPSN")
        self.register_memory("history", None)
        if exp_init:
            weight = torch.exp2(torch.arange(-(k - 1), 1, dtype=torch.float32))
        else:
            weight = torch.ones([1, k])
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            weight = weight[0]
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.as_tensor(-float(v_threshold)))
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)

    def multi_step_functional_forward(self, inputs, states, single: bool = False, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "SlidingPSN", 2, "[T, N, *]")
        (history,) = states
        check_history(history, x_seq, "SlidingPSN")
        T = x_seq.shape[0]
        as_conv = (T, 1, 1, -1)
        spikes = ops.causal_conv_fire(
            x_seq.reshape(as_conv),
            self.weight.view(1, -1),
            self.bias.view(1),
            1,
            self.surrogate_function,
            None if history is None else history.reshape((history.shape[0], 1, 1, -1)),
            backend="torch" if single else self.backend,
        )
        return (spikes.view(x_seq.shape),), (next_history(history, x_seq, self.k - 1),)

    def extra_repr(self) -> str:
        return f"k={self.k}, {self._family_repr()}"
