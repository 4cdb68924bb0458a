"""Charge-and-fire ops of the PSN family, dispatched by backend.

Every neuron turns its parameters into plain tensors and calls one of these functions;
the backend module does the math. A new backend adds a module here and touches nothing else.
``backend="torch"`` is :mod:`.fast` (PyTorch GEMMs); :mod:`.reference` is the exact, simple
ground truth the tests and the CUDA kernels are held to.

Canonical layouts (the neurons reshape to them):

- ``dense_fire``: ``x [T_in, M]``, ``weight [T_out, T_in]``, ``bias [T_out, 1]`` -> spikes ``[T_out, M]``.
- ``causal_conv_fire``: ``x [T, B, C, S]``, ``weight [C, k]`` or ``[1, k]`` (shared), ``bias [C]`` or
  ``[1]`` -> spikes ``[T, B, C, S]`` with ``H[t] = sum_i weight[:, i] * x[t - (k-1-i)*dilation]``.
  ``history [L, B, C, S]`` holds the ``L = (k-1)*dilation`` inputs before ``x[0]`` (zeros where none).
- ``conv_channel_stats``: the per-channel mean and biased variance of the same charge (no bias),
  reduced over ``T, B, S``: what MFPSN's batch-norm threshold needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from spikingjelly_psn.ops import fast

BACKENDS: tuple[str, ...] = ("torch", "cupy")

_MODULES = {
    "torch": "spikingjelly_psn.ops.fast",
    "cupy": "spikingjelly_psn.ops.cupy",
}
# The torch backend is always loaded, so even a first call under torch.compile has no import to trace.
_loaded: dict[str, ModuleType] = {"torch": fast}


def backend_module(backend: str) -> ModuleType:
    """The module implementing ``backend``, imported once (it checks its own inputs).

    Loaded modules are cached in a dict, which ``torch.compile`` traces without a graph break.
    """
    if backend not in _MODULES:
        raise NotImplementedError(
            f"backend={backend!r} is not supported; choose one of {BACKENDS}."
        )
    module = _loaded.get(backend)
    if module is None:
        module = _loaded[backend] = importlib.import_module(_MODULES[backend])
    return module


def dense_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    surrogate_function,
    backend: str = "torch",
) -> torch.Tensor:
    """Spikes ``Θ(weight @ x + bias)`` of PSN and masked PSN."""
    return backend_module(backend).dense_fire(x, weight, bias, surrogate_function)


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
    return backend_module(backend).causal_conv_fire(
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
    return backend_module(backend).conv_channel_stats(x, weight, dilation, history)
