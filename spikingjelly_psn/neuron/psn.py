"""PSN: ``H = W X`` over all T time-steps at once (Fang et al., NeurIPS 2023)."""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import base
from torch import nn

from spikingjelly_psn import ops
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    check_input,
    check_matmul_dtypes,
    check_positive_int,
)


def check_time_steps(x_seq: torch.Tensor, T: int, cls_name: str, hint: str = "") -> None:
    """A PSN's ``[T, T]`` weight fixes the number of time-steps along dim 0."""
    if x_seq.shape[0] != T:
        raise ValueError(
            f"{cls_name}(T={T}) got an input with {x_seq.shape[0]} time-steps (shape "
            f"{tuple(x_seq.shape)}); its weight is [T, T], so dim 0 must be T={T}.{hint}"
        )


def dense_spikes(
    module: nn.Module, x_seq: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str
) -> torch.Tensor:
    """``Θ(weight @ x_seq.flatten(1) + bias)``, one output step per row of ``weight``."""
    check_matmul_dtypes(x_seq, module.weight, type(module).__name__)
    spikes = ops.dense_fire(x_seq.flatten(1), weight, bias, module.surrogate_function, backend)
    return spikes.view(weight.shape[0], *x_seq.shape[1:])


def init_dense_parameters(module: nn.Module, T: int, v_threshold: float) -> None:
    """``weight [T, T]`` kaiming-uniform(a=√5) and ``bias [T, 1] = −v_threshold``, as SpikingJelly."""
    module.weight = nn.Parameter(torch.zeros([T, T]))
    module.bias = nn.Parameter(torch.zeros([T, 1]))
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    nn.init.constant_(module.bias, -float(v_threshold))


class PSN(PSNFamilyMixin, nn.Module, base.MultiStepModule):
    r"""Parallel Spiking Neuron: ``H = W X``, ``S = Θ(H + b)`` with learnable ``W [T, T]``, ``b [T, 1]``.

    Same parameters, state_dict keys and torch-backend numerics as SpikingJelly's ``neuron.PSN``;
    adds ``step_mode`` (multi-step only: every output step depends on every input step, so
    ``functional.set_step_mode(net, "s")`` raises instead of being skipped), ``backend`` and
    SpikingJelly's neuron keyword arguments.
    """

    step_modes = ("m",)

    def __init__(
        self,
        T: int,
        surrogate_function=None,
        step_mode: str = "m",
        backend: str = "torch",
        v_threshold: float = 1.0,
        **reset_kwargs,
    ):
        super().__init__()
        self.T = check_positive_int("T", T, "PSN")
        init_dense_parameters(self, T, v_threshold)
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)

    def _single_step_hint(self) -> str:
        return (
            "PSN is multi-step only: its charge at step t depends on the inputs of all T steps; for step-by-step "
            "inference use MaskedPSN (lambda_=1), SlidingPSN or MFPSN."
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_input(x_seq, "PSN", 2, "[T, N, *]")
        check_time_steps(x_seq, self.T, "PSN")
        return dense_spikes(self, x_seq, self.weight, self.bias, self.backend)

    def extra_repr(self) -> str:
        return f"T={self.T}, {self._family_repr()}"
