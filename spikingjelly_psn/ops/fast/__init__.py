"""``backend="torch"``: the ops of :mod:`spikingjelly_psn.ops` with PyTorch's fast primitives.

Same arguments and results as :mod:`spikingjelly_psn.ops.reference` (the exact ground truth),
computed with GEMMs instead of one multiply and one add per tap:

- ``dense_fire``: SpikingJelly's ``addmm``; spikes and gradients bit for bit SpikingJelly's.
- ``causal_conv_fire`` with a shared weight (sliding PSN): the same ``addmm`` on a Toeplitz
  matrix as SpikingJelly's ``SlidingPSN``, so a whole sequence gives its spikes bit for bit.
- ``causal_conv_fire`` with per-channel weights (MFPSN) and ``conv_channel_stats``: batched
  GEMMs on cache-sized blocks and time tiles, accumulated in fp32 (fp64 for fp64 inputs).
- ``batchnorm_conv_fire``: the two above and the fold between them as one autograd function,
  whose backward writes one input gradient instead of two.

Each is an autograd function that saves only its inputs and recomputes the charge in the
backward; with a spiking ``surrogate.ATan`` (the default) the surrogate gradient runs in place.
Results equal the reference up to float rounding (sums in another order, fused multiply-adds).
Under ``torch.compile`` the ops are plain differentiable PyTorch (the reference for per-channel
weights), which the compiler fuses itself.
"""

from __future__ import annotations

import torch

from spikingjelly_psn.ops import batchnorm_conv_fire_in_steps, reference
from spikingjelly_psn.ops.fast.amp import autocast_dtype, autocast_like_addmm, no_autocast
from spikingjelly_psn.ops.fast.batchnorm import BatchNormConvFire, Fold
from spikingjelly_psn.ops.fast.conv import CausalConvFire, gemm_dtype, shared_charge
from spikingjelly_psn.ops.fast.dense import DenseFire
from spikingjelly_psn.ops.fast.firing import fire_, is_lean, strategy
from spikingjelly_psn.ops.fast.stats import ConvChannelStats
from spikingjelly_psn.ops.fast.toeplitz import tap_map, toeplitz

__all__ = ["batchnorm_conv_fire", "causal_conv_fire", "conv_channel_stats", "dense_fire"]

# The backend declaration read by spikingjelly_psn.ops.backends.
NAME = "torch"
OPS: tuple[str, ...] = tuple(__all__)
SINGLE_STEP = True
EXTRAS: dict[str, list[str]] = {}


def missing_library() -> str | None:
    """None: PyTorch is always installed."""
    return None


def unavailable_reason(device: torch.device) -> str | None:
    """None: PyTorch runs on every device."""
    return None


#: A shared-weight (sliding PSN) sequence up to this size runs as a dense PSN with its Toeplitz
#: matrix; bigger ones run block by block (cache-sized backward, less scratch).
DENSE_SHARED_BYTES = 8 << 20
#: The statistics' backward uses ``AᵀA`` when its ``[C, T, T]`` matrices are this many times
#: smaller than the input at least (see :class:`.stats.ConvChannelStats`).
MOMENTS_FRACTION = 16


def dense_fire(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate_function
) -> torch.Tensor:
    """``Θ(weight @ x + bias)`` as SpikingJelly's PSN computes it."""
    if torch.compiler.is_compiling() or not is_lean(surrogate_function):
        return reference.dense_fire(x, weight, bias, surrogate_function)
    x, weight, bias = autocast_like_addmm(autocast_dtype(x), x, weight, bias)
    with no_autocast(x):
        if not _needs_grad(x, weight, bias):
            return fire_(torch.addmm(bias, weight, x))
        return DenseFire.apply(x, weight, bias, float(surrogate_function.alpha))


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check_history(x: torch.Tensor, history: torch.Tensor | None, lag: int) -> None:
    if history is not None and history.shape != (lag, *x.shape[1:]):
        raise ValueError(
            f"history has shape {tuple(history.shape)}, expected {(lag, *x.shape[1:])}"
        )


def causal_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
) -> torch.Tensor:
    """Spikes of the causal convolution; ``power_of_two`` changes nothing (±2^e is exact)."""
    lag = (weight.shape[1] - 1) * dilation
    _check_history(x, history, lag)
    if lag == 0:
        history = None
    if weight.shape[0] > 1:
        if torch.compiler.is_compiling():
            return reference.causal_conv_fire(
                x, weight, bias, dilation, surrogate_function, history
            )
        with no_autocast(x):
            return CausalConvFire.apply(
                x.contiguous(), weight, bias, history, dilation, strategy(surrogate_function)
            )
    shape, T = x.shape, x.shape[0]
    x2, weight, bias, h2 = autocast_like_addmm(autocast_dtype(x), x, weight, bias, history)
    x2 = x2.reshape(T, 1, 1, -1).contiguous()
    h2 = None if h2 is None else h2.reshape(h2.shape[0], 1, 1, -1)
    if torch.compiler.is_compiling():
        h = shared_charge(x2.view(T, -1), weight, bias, dilation, h2)
        return surrogate_function(h).to(x2.dtype).view(shape)
    with no_autocast(x):
        if h2 is None and is_lean(surrogate_function) and x2.nbytes <= DENSE_SHARED_BYTES:
            spikes = _shared_as_dense(x2.view(T, -1), weight, bias, dilation, surrogate_function)
        else:
            firing = strategy(surrogate_function)
            spikes = CausalConvFire.apply(x2, weight, bias, h2, dilation, firing)
    return spikes.view(shape)


def _shared_as_dense(x, weight, bias, dilation, surrogate_function) -> torch.Tensor:
    """A whole sequence with a shared weight, as PSN with its Toeplitz matrix (the matrix is a
    differentiable gather of the taps): a handful of ops, the right thing for small inputs."""
    dtype = gemm_dtype(x, weight, bias)
    k, T = weight.shape[1], x.shape[0]
    a = toeplitz(weight.to(dtype), tap_map(k, dilation, T, T, 0, x.device))[0]
    return dense_fire(x.to(dtype), a, bias.to(dtype), surrogate_function).to(x.dtype)


def conv_channel_stats(
    x: torch.Tensor, weight: torch.Tensor, dilation: int, history: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of the charge over ``T, B, S`` (fp32 or wider)."""
    lag = (weight.shape[1] - 1) * dilation
    _check_history(x, history, lag)
    if lag == 0:
        history = None
    if torch.compiler.is_compiling():
        return reference.conv_channel_stats(x, weight, dilation, history)
    weight = weight.expand(x.shape[2], -1)
    moments = _use_moments(x, history, x, weight)
    with no_autocast(x):
        mean, var, _, _ = ConvChannelStats.apply(x.contiguous(), weight, history, dilation, moments)
    return mean, var


def _use_moments(x: torch.Tensor, history: torch.Tensor | None, *inputs: torch.Tensor) -> bool:
    """Whether the statistics' backward should use moments: a gradient is wanted and the
    moments' two ``[C, T, T]`` matrices are small next to the input."""
    T, C = x.shape[0], x.shape[2]
    return history is None and _needs_grad(*inputs) and x.numel() >= MOMENTS_FRACTION * C * T * T


def batchnorm_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    fold: Fold,
    fold_params: tuple[torch.Tensor, ...],
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spikes with the weights ``fold`` makes of the charge's batch statistics, and those
    statistics; one autograd function when the statistics' backward uses moments."""
    if (weight.shape[1] - 1) * dilation == 0:
        history = None
    if torch.compiler.is_compiling() or not _use_moments(x, history, x, weight, *fold_params):
        return batchnorm_conv_fire_in_steps(
            x, weight, fold, fold_params, dilation, surrogate_function, history, power_of_two, NAME
        )
    with no_autocast(x):
        spikes, mean, var, _, _ = BatchNormConvFire.apply(
            x.contiguous(), weight.expand(x.shape[2], -1), dilation, strategy(surrogate_function), fold,
            *fold_params,
        )  # fmt: skip
    return spikes, mean, var
