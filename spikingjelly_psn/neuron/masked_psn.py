"""Masked PSN: a PSN whose weight is progressively masked to a causal band of width k."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import base

from spikingjelly_psn.neuron import queue as q
from spikingjelly_psn.neuron.common import (
    PSNFamilyMixin,
    check_finite,
    check_input,
    check_positive_int,
    check_steps,
)
from spikingjelly_psn.neuron.psn import check_time_steps, dense_spikes, init_dense_parameters


def check_lambda(value: float) -> float:
    """λ as a float in [0, 1]; anything else blends the masks into a meaningless weight."""
    value = check_finite("lambda_", value, "MaskedPSN")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"MaskedPSN: lambda_ must be in [0, 1], got {value!r}.")
    return value


class MaskedPSN(PSNFamilyMixin, base.MemoryModule):
    r"""``H = (W ⊙ (λ·M_k + (1−λ)·J)) X``, ``S = Θ(H + b)``; ``M_k[i][j] = 1`` iff ``j ≤ i ≤ j+k−1``.

    SpikingJelly's ``neuron.MaskedPSN``: the same arguments and defaults (``step_mode='s'``),
    parameters, buffers (``_lambda_``, ``mask0``, ``mask1``), memories (``time_step``, ``queue``),
    state_dict keys and torch-backend numerics. A multi-step call is one whole sequence of ``T``
    steps. Single steps (once ``λ = 1``) queue the earlier inputs until ``reset()``, with gradients
    through them. ``streaming=True`` makes consecutive multi-step calls chunks of one sequence.
    """

    def __init__(
        self,
        k: int,
        T: int,
        lambda_init: float = 0.0,
        surrogate_function=None,
        step_mode: str = "s",
        backend: str = "torch",
        v_threshold: float = 1.0,
        streaming: bool = False,
        **reset_kwargs,
    ):
        super().__init__()
        self.register_memory("time_step", 0)
        self.register_memory("queue", [])
        self.k = check_positive_int("k", k, "MaskedPSN")
        self.T = check_positive_int("T", T, "MaskedPSN")
        self.streaming = bool(streaming)
        self.register_buffer("_lambda_", torch.as_tensor(check_lambda(lambda_init)))
        init_dense_parameters(self, T, v_threshold)
        mask1 = torch.ones([T, T])
        self.register_buffer("mask0", torch.tril(mask1) * torch.triu(mask1, -(k - 1)))
        self.register_buffer("mask1", mask1)
        self._init_family(surrogate_function, step_mode, backend, reset_kwargs)

    @property
    def lambda_(self) -> torch.Tensor:
        """The masking progress λ in [0, 1] (the ``_lambda_`` buffer): 0 is a PSN, 1 the band."""
        return self._lambda_

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._lambda_.fill_(check_lambda(value))

    @staticmethod
    def gen_masked_weight(
        lambda_: torch.Tensor, mask0: torch.Tensor, mask1: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``(λ·mask0 + (1−λ)·mask1) ⊙ weight``, SpikingJelly's formula."""
        return (lambda_ * mask0 + (1.0 - lambda_) * mask1) * weight

    def masked_weight(self) -> torch.Tensor:
        """``W ⊙ M_k(λ)``, bit for bit SpikingJelly's for every λ, without reading λ on the host.

        At λ = 1 SpikingJelly computes ``weight * mask0``; the blend gives the same bits there
        (``1·m + 0·1 = m`` exactly), so no branch on λ is needed: no device sync, and
        ``torch.compile`` does not recompile as λ ramps.
        """
        return self.gen_masked_weight(self._lambda_, self.mask0, self.mask1, self.weight)

    def _is_causal(self) -> bool:
        return bool(self._lambda_ >= 1.0)

    def single_step_functional_forward(self, inputs, states, **kwargs):
        x = inputs[0]
        check_input(x, "MaskedPSN", 1, "[N, *]")
        time_step, queue = states
        self._check_more_steps(time_step, 1, "single-step mode")
        q.check_queue(queue, x.shape, "MaskedPSN")
        queue = q.push(queue, x, self.k)
        weight = self.masked_weight()[time_step, time_step + 1 - len(queue) : time_step + 1]
        h = torch.sum(weight.unsqueeze(-1) * torch.stack(queue), 0)
        spike = self.surrogate_function(h + self.bias[time_step])
        return (spike.view(x.shape),), (time_step + 1, queue)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x_seq = inputs[0]
        check_input(x_seq, "MaskedPSN", 2, "[T, N, *]")
        if not self.streaming:
            check_time_steps(x_seq, self.T, "MaskedPSN", _CHUNK_HINT)
            return (
                dense_spikes(self, x_seq, self.masked_weight(), self.bias, self.backend),
            ), states
        time_step, queue = states
        steps = x_seq.shape[0]
        end = time_step + steps
        if time_step == 0 and steps == self.T:  # a whole sequence: any λ
            spikes = dense_spikes(self, x_seq, self.masked_weight(), self.bias, self.backend)
        else:
            check_steps(x_seq, "MaskedPSN")
            self._check_more_steps(time_step, steps, f"a {steps}-step chunk")
            q.check_queue(queue, x_seq.shape[1:], "MaskedPSN")
            known = min(len(queue), self.k - 1)
            window = x_seq
            if known:
                window = torch.cat([q.window(queue, known, x_seq[0]).detach(), x_seq])
            weight = self.masked_weight()[time_step:end, time_step - known : end]
            spikes = dense_spikes(self, window, weight, self.bias[time_step:end], self.backend)
        return (spikes,), (end, q.extend(queue, x_seq, self.k))

    def _check_more_steps(self, time_step: int, steps: int, what: str) -> None:
        """Steps after the first need λ = 1 (causal) and must stay within the T steps."""
        if not self._is_causal():
            raise ValueError(
                f"MaskedPSN with lambda_={float(self._lambda_)} < 1 is not causal, so it cannot "
                f"run {what}: feed whole sequences of T={self.T} steps in multi-step mode, or set "
                "lambda_ = 1."
            )
        if time_step + steps > self.T:
            raise OverflowError(
                f"MaskedPSN(T={self.T}) has already run {time_step} time-steps and cannot run "
                f"{steps} more; call functional.reset_net(net) between sequences."
            )

    def extra_repr(self) -> str:
        return f"k={self.k}, T={self.T}, lambda_={self.lambda_}, {self._family_repr()}"


_CHUNK_HINT = (
    " A multi-step call is one whole sequence; to feed a sequence in chunks, construct the neuron "
    "with streaming=True (or call spikingjelly_psn.set_streaming(net)) and set lambda_ = 1."
)
