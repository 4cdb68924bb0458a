"""Charge-and-fire ops of the PSN family, dispatched by backend.

Every neuron turns its parameters into plain tensors and calls one of these functions;
the backend module does the math. A new backend is a package here, listed in :mod:`.backends`
(the seam), and touches nothing outside ``ops/``.
``backend="torch"`` is :mod:`.fast` (PyTorch GEMMs); :mod:`.reference` is the exact, simple
ground truth the tests and the CUDA kernels are held to.

Canonical layouts (the neurons reshape to them):

- ``dense_fire``: ``x [T_in, M]``, ``weight [T_out, T_in]``, ``bias [T_out, 1]`` -> spikes ``[T_out, M]``.
- ``causal_conv_fire``: ``x [T, B, C, S]``, ``weight [C, k]`` or ``[1, k]`` (shared), ``bias [C]`` or
  ``[1]`` -> spikes ``[T, B, C, S]`` with ``H[t] = sum_i weight[:, i] * x[t - (k-1-i)*dilation]``.
  ``history [L, B, C, S]`` holds the ``L = (k-1)*dilation`` inputs before ``x[0]`` (zeros where none).
- ``conv_channel_stats``: the per-channel mean and biased variance of the same charge (no bias),
  reduced over ``T, B, S``: what MFPSN's batch-norm threshold needs.
- ``batchnorm_conv_fire``: the statistics folded into the weights and fired (MFPSN's batch-norm
  threshold in training), one op where the backend fuses them.
"""

from __future__ import annotations

import torch

from spikingjelly_psn.ops import backends


def dense_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    surrogate_function,
    backend: str = "torch",
) -> torch.Tensor:
    """Spikes ``Θ(weight @ x + bias)`` of PSN and masked PSN."""
    return backends.op("dense_fire", backend)(x, weight, bias, surrogate_function)


def causal_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
    backend: str = "torch",
) -> torch.Tensor:
    """Spikes of the causal, dilated, channel-wise temporal convolution (sliding PSN, MFPSN).

    ``power_of_two`` promises that every weight is 0 or ``±2^e``, so a backend may apply the
    taps with exponent arithmetic instead of multiplies.
    """
    return backends.op("causal_conv_fire", backend)(
        x, weight, bias, dilation, surrogate_function, history, power_of_two
    )


def conv_channel_stats(
    x: torch.Tensor,
    weight: torch.Tensor,
    dilation: int,
    history: torch.Tensor | None = None,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance (fp32) of the causal convolution, differentiable."""
    return backends.op("conv_channel_stats", backend)(x, weight, dilation, history)


def batchnorm_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    fold,
    fold_params: tuple[torch.Tensor, ...],
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MFPSN's batch-norm threshold in training: ``(spikes, mean, var)``.

    The statistics of the charge under ``weight`` become the firing weights and bias through
    ``fold(mean, var, *fold_params)`` (differentiable; gradients reach ``fold_params``), which
    then fire as :func:`causal_conv_fire` (``power_of_two``: as there). A backend may do the
    three as one op; otherwise they run one after the other.
    """
    if backends.implements("batchnorm_conv_fire", backend):
        return backends.op("batchnorm_conv_fire", backend)(
            x, weight, fold, fold_params, dilation, surrogate_function, history, power_of_two
        )
    return batchnorm_conv_fire_in_steps(
        x, weight, fold, fold_params, dilation, surrogate_function, history, power_of_two, backend
    )


def batchnorm_conv_fire_in_steps(
    x: torch.Tensor,
    weight: torch.Tensor,
    fold,
    fold_params: tuple[torch.Tensor, ...],
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None,
    power_of_two: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`batchnorm_conv_fire` as its three steps: statistics, fold, firing."""
    mean, var = conv_channel_stats(x, weight, dilation, history, backend)
    folded_weight, folded_bias = fold(mean, var, *fold_params)
    spikes = causal_conv_fire(
        x, folded_weight, folded_bias, dilation, surrogate_function, history, power_of_two, backend
    )
    return spikes, mean, var
