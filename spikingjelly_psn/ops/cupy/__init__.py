"""``backend="cupy"``: fused CUDA kernels for every op of :mod:`spikingjelly_psn.ops`.

The three functions take exactly the arguments of the reference ops and return the same
values, with the charge never stored in global memory. Importing this module neither imports
CuPy nor initialises CUDA; both happen on the first call.

Deterministic mode (weight gradients summed in a fixed order instead of with atomics): set the
environment variable ``SPIKINGJELLY_PSN_DETERMINISTIC=1``, call :func:`set_deterministic`, or
enable ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from spikingjelly_psn.ops import checks, surrogates

from . import _launch, _ops
from ._launch import CUPY_MISSING

__all__ = [
    "causal_conv_fire",
    "conv_channel_stats",
    "dense_fire",
    "deterministic",
    "set_deterministic",
    "supported_surrogates",
]

# The backend declaration read by spikingjelly_psn.ops.backends.
NAME = "cupy"
OPS: tuple[str, ...] = ("causal_conv_fire", "conv_channel_stats", "dense_fire")
SINGLE_STEP = False  # the kernels run whole sequences
EXTRAS: dict[str, list[str]] = {
    "cupy12": ["cupy-cuda12x>=13"],
    "cupy13": ["cupy-cuda13x>=13"],
    "cupy": ["cupy-cuda13x>=13"],
}

_DETERMINISTIC = os.environ.get("SPIKINGJELLY_PSN_DETERMINISTIC", "0") not in ("", "0")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_CHANNELS = 65535  # the kernels' grid.y


def missing_library() -> str | None:
    """The install command when CuPy cannot be imported (checked without importing it)."""
    if importlib.util.find_spec("cupy") is not None:
        return None
    return CUPY_MISSING


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernels cannot run on ``device``: not CUDA, no CuPy, or no usable GPU."""
    if device.type != "cuda":
        return f"the cupy backend needs a CUDA device; this run is on {device}"
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not importable ({exc}); install spikingjelly-psn[cupy]"
    if not cupy.is_available():
        return "cupy.is_available() is False: CuPy sees no usable CUDA device"
    return None


def set_deterministic(enabled: bool) -> None:
    """Reduce weight and bias gradients in a fixed order (bitwise reproducible) or not."""
    global _DETERMINISTIC
    _DETERMINISTIC = bool(enabled)


def deterministic() -> bool:
    """Whether the backward kernels avoid order-dependent atomics."""
    return _DETERMINISTIC or torch.are_deterministic_algorithms_enabled()


def supported_surrogates() -> tuple[str, ...]:
    """Names of the SpikingJelly surrogate classes the kernels implement."""
    return tuple(surrogates.SURROGATES)


def _check(x: torch.Tensor, *others: torch.Tensor | None) -> None:
    """CuPy installed, tensors on one CUDA device with a supported dtype, a usable GPU."""
    if torch.compiler.is_compiling():
        return  # checked eagerly; a compiled graph calls the ops, which import CuPy themselves
    _launch.require_cupy()
    checks.check_tensors(NAME, "cuda", _DTYPES, x, *others)
    _launch.require_gpu()


def _check_channels(x: torch.Tensor) -> None:
    """The kernels' grid holds at most ``_MAX_CHANNELS`` channels."""
    if x.shape[2] > _MAX_CHANNELS:
        raise ValueError(
            f'backend="{NAME}" supports at most {_MAX_CHANNELS} channels, got {x.shape[2]}'
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
    """Spikes of the causal, dilated, channel-wise temporal convolution (sliding PSN, MFPSN).

    With ``power_of_two`` every weight must be 0 or ±2^e: taps are then applied by exponent
    arithmetic. ``history`` is an input only (no gradient flows into it).
    """
    _check(x, weight, bias, history)
    sg, params = surrogates.encode(surrogate_function, NAME)
    x, history = checks.conv_inputs(x, weight, bias, dilation, history)
    _check_channels(x)
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
    x, history = checks.conv_inputs(x, weight, None, dilation, history)
    _check_channels(x)
    return _ops.conv_channel_stats(x, weight, history, int(dilation), deterministic())


def dense_fire(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate_function
) -> torch.Tensor:
    """Spikes ``Θ(weight @ x + bias)`` of PSN and masked PSN (``weight`` may be [T_out, T_in]).

    Under CUDA autocast, x is cast to the autocast dtype, as ``torch.addmm`` would be.
    """
    _check(x, weight, bias)
    sg, params = surrogates.encode(surrogate_function, NAME)
    checks.dense_inputs(x, weight, bias)
    if torch.is_autocast_enabled("cuda"):
        x = x.to(torch.get_autocast_dtype("cuda"))
    return _ops.dense_fire(x.contiguous(), weight, bias, sg, *params)
