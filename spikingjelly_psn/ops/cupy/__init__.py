"""``backend="cupy"``: fused CUDA kernels for every op of :mod:`spikingjelly_psn.ops`.

The three functions take exactly the arguments of the reference ops and return the same
values, with the charge never stored in global memory. Importing this module neither imports
CuPy nor initialises CUDA; both happen on the first call.

Deterministic mode (weight gradients summed in a fixed order instead of with atomics): set the
environment variable ``SPIKINGJELLY_PSN_DETERMINISTIC=1``, call :func:`set_deterministic`, or
enable ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import os

import torch

from . import _launch, _ops, _surrogates

__all__ = [
    "causal_conv_fire",
    "conv_channel_stats",
    "dense_fire",
    "deterministic",
    "set_deterministic",
    "supported_surrogates",
]

_DETERMINISTIC = os.environ.get("SPIKINGJELLY_PSN_DETERMINISTIC", "0") not in ("", "0")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def set_deterministic(enabled: bool) -> None:
    """Reduce weight and bias gradients in a fixed order (bitwise reproducible) or not."""
    global _DETERMINISTIC
    _DETERMINISTIC = bool(enabled)


def deterministic() -> bool:
    """Whether the backward kernels avoid order-dependent atomics."""
    return _DETERMINISTIC or torch.are_deterministic_algorithms_enabled()


def supported_surrogates() -> tuple[str, ...]:
    """Names of the SpikingJelly surrogate classes the kernels implement."""
    return tuple(_surrogates.SURROGATES)


def _check(x: torch.Tensor, *others: torch.Tensor | None) -> None:
    """CuPy installed, tensors on one CUDA device with a supported dtype, a usable GPU."""
    if torch.compiler.is_compiling():
        return  # checked eagerly; a compiled graph calls the ops, which import CuPy themselves
    _launch.require_cupy()
    for tensor in (x, *others):
        if tensor is not None and tensor.device.type != "cuda":
            raise RuntimeError(
                f'backend="cupy" runs on CUDA tensors, got a tensor on {tensor.device}; move the '
                'module and its input to the GPU (.cuda()), or use backend="torch".'
            )
    for tensor in others:
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"all tensors must be on {x.device}, got one on {tensor.device}")
    if x.dtype not in _DTYPES:
        raise TypeError(f'backend="cupy" supports float32, float16 and bfloat16, got {x.dtype}')
    _launch.require_gpu()


def _conv_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dilation: int,
    history: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the causal-conv shapes; return x and history, contiguous, history in x.dtype."""
    if x.dim() != 4:
        raise ValueError(f"x must be [T, B, C, S], got shape {tuple(x.shape)}")
    channels = x.shape[2]
    if weight.dim() != 2 or weight.shape[0] not in (1, channels) or weight.shape[1] < 1:
        raise ValueError(
            f"weight must be [C, k] or [1, k] with C={channels}, got {tuple(weight.shape)}"
        )
    if bias is not None and bias.numel() not in (1, channels):
        raise ValueError(f"bias must have 1 or C={channels} elements, got {bias.numel()}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if channels > 65535:
        raise ValueError(f'backend="cupy" supports at most 65535 channels, got {channels}')
    lag = (weight.shape[1] - 1) * dilation
    if history is not None:
        expected = (lag, *x.shape[1:])
        if tuple(history.shape) != expected:
            raise ValueError(f"history has shape {tuple(history.shape)}, expected {expected}")
        history = history.to(x.dtype).contiguous() if lag > 0 else None
    return x.contiguous(), history


def causal_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
) -> torch.Tensor:
    """Spikes of the causal, dilated, channel-wise temporal convolution (sliding PSN, MFPSN).

    With ``power_of_two`` every weight must be 0 or ±2^e: taps are then applied by exponent
    arithmetic. ``history`` is an input only (no gradient flows into it).
    """
    _check(x, weight, bias, history)
    sg, params = _surrogates.encode(surrogate_function)
    x, history = _conv_args(x, weight, bias, dilation, history)
    return _ops.causal_conv_fire(
        x, weight, bias.reshape(-1), history, int(dilation), bool(power_of_two), sg, *params,
        deterministic(),
    )  # fmt: skip


def conv_channel_stats(
    x: torch.Tensor,
    weight: torch.Tensor,
    dilation: int,
    history: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance (fp32) of the charge, differentiable in x and weight."""
    _check(x, weight, history)
    x, history = _conv_args(x, weight, None, dilation, history)
    return _ops.conv_channel_stats(x, weight, history, int(dilation), deterministic())


def dense_fire(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate_function
) -> torch.Tensor:
    """Spikes ``Θ(weight @ x + bias)`` of PSN and masked PSN (``weight`` may be [T_out, T_in]).

    Under CUDA autocast, x is cast to the autocast dtype, as ``torch.addmm`` would be.
    """
    _check(x, weight, bias)
    sg, params = _surrogates.encode(surrogate_function)
    if x.dim() != 2 or weight.dim() != 2 or weight.shape[1] != x.shape[0]:
        raise ValueError(
            f"dense_fire needs x [T_in, M] and weight [T_out, T_in], got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if bias.numel() != weight.shape[0]:
        raise ValueError(f"bias must have T_out={weight.shape[0]} elements, got {bias.numel()}")
    if torch.is_autocast_enabled("cuda"):
        x = x.to(torch.get_autocast_dtype("cuda"))
    return _ops.dense_fire(x.contiguous(), weight, bias, sg, *params)
