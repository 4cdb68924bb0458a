"""Masked PSN: a PSN whose weight is progressively masked to a causal band of width k."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import base

from spikingjelly_psn import ops
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    check_history,
    check_input,
    check_positive_int,
    next_history,
)
from spikingjelly_psn.neuron.psn import init_dense_parameters


class MaskedPSN(PSNFamilyMixin, base.MemoryModule):
    r"""``H = (W ⊙ (λ·M_k + (1−λ)·J)) X``, ``S = Θ(H + b)``; ``M_k[i][j] = 1`` iff ``j ≤ i ≤ j+k−1``.

    Same parameters, buffers (``_lambda_``, ``mask0``, ``mask1``), state_dict keys and
    torch-backend numerics as SpikingJelly's ``neuron.MaskedPSN``. Once ``λ = 1`` the neuron is
    causal: single steps and chunks of a sequence fed in consecutive calls give the spikes of one
    full call, until ``reset()``. ``lambda_`` is kept as a Python float too, so the forward never
    synchronises with the device to read it.
    """

    def __init__(
        self,
        k: int,
        T: int,
        lambda_init: float = 0.0,
        surrogate_function=None,
        step_mode: str = "m",
        backend: str = "torch",
        v_threshold: float = 1.0,
        **reset_kwargs,
    ):
        super().__init__()
        self.k = check_positive_int("k", k, "MaskedPSN")
        self.T = check_positive_int("T", T, "MaskedPSN")
        if k > T:
            raise ValueError(f"MaskedPSN: the order k={k} cannot exceed T={T}.")
        self.register_memory("time_step", 0)
        self.register_memory("history", None)
        self.register_buffer("_lambda_", torch.as_tensor(float(lambda_init)))
        self._set_lambda_cache(float(lambda_init))
        init_dense_parameters(self, T, v_threshold)
        mask1 = torch.ones([T, T])
        self.register_buffer("mask0", torch.tril(mask1) * torch.triu(mask1, -(k - 1)))
        self.register_buffer("mask1", mask1)
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)

    @property
    def lambda_(self) -> float:
        """The masking progress λ in [0, 1]: 0 is a full PSN, 1 the causal band."""
        return self._lambda_value

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._set_lambda_cache(float(value))
        self._lambda_.fill_(float(value))

    def _set_lambda_cache(self, value: float) -> None:
        """Host-side copies of λ: the value for reading, and whether the neuron is causal.

        The forward branches on ``_causal`` only and reads λ from the buffer, so neither a host
        sync nor a ``torch.compile`` recompilation per λ value of the ramp is needed.
        """
        self._lambda_value = value
        self._causal = value >= 1.0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_lambda_cache(float(self._lambda_))

    def masked_weight(self) -> torch.Tensor:
        """``W ⊙ M_k(λ)``, computed as SpikingJelly does so results match bit for bit."""
        if self._causal:
            return self.weight * self.mask0
        lam = self._lambda_
        return (lam * self.mask0 + (1.0 - lam) * self.mask1) * self.weight

    def multi_step_functional_forward(self, inputs, states, single: bool = False, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "MaskedPSN", 2, "[T, N, *]")
        time_step, history = states
        steps = x_seq.shape[0]
        backend = "torch" if single else self.backend
        if time_step == 0 and steps == self.T:  # one whole sequence: the SpikingJelly path
            spikes = ops.dense_fire(
                x_seq.flatten(1), self.masked_weight(), self.bias, self.surrogate_function, backend
            )
            return (spikes.view(x_seq.shape),), states
        self._check_partial(time_step, steps, single)
        check_history(history, x_seq, "MaskedPSN")
        known = 0 if history is None else history.shape[0]
        end = time_step + steps
        window = torch.cat([history, x_seq]) if known else x_seq
        weight = self.masked_weight()[time_step:end, time_step - known : end]
        spikes = ops.dense_fire(
            window.flatten(1), weight, self.bias[time_step:end], self.surrogate_function, backend
        )
        new_history = next_history(None, window, min(self.k - 1, end))
        return (spikes.view(x_seq.shape),), (end, new_history)

    def _check_partial(self, time_step: int, steps: int, single: bool) -> None:
        what = "single-step mode" if single else f"a {steps}-step chunk (T={self.T})"
        if not self._causal:
            raise ValueError(
                f"MaskedPSN with lambda_={self._lambda_value} < 1 is not causal, so it cannot run "
                f"{what}: feed whole sequences of T={self.T} steps, or set lambda_ = 1."
            )
        if time_step + steps > self.T:
            raise OverflowError(
                f"MaskedPSN(T={self.T}) has already run {time_step} time-steps and cannot run "
                f"{steps} more; call functional.reset_net(net) between sequences."
            )

    def extra_repr(self) -> str:
        return f"k={self.k}, T={self.T}, lambda_={self._lambda_value}, {self._family_repr()}"
