"""Input checks every kernel backend needs: devices, dtypes and the canonical shapes of the ops.

The layouts are those of :mod:`spikingjelly_psn.ops`; the messages name the backend, so a user
sees which choice to change.
"""

from __future__ import annotations

import torch


def check_tensors(
    backend: str,
    device_type: str,
    dtypes: tuple[torch.dtype, ...],
    x: torch.Tensor,
    *others: torch.Tensor | None,
) -> None:
    """Every tensor on one ``device_type`` device, ``x`` in one of ``dtypes``."""
    for tensor in (x, *others):
        if tensor is not None and tensor.device.type != device_type:
            raise RuntimeError(
                f'backend="{backend}" runs on {device_type.upper()} tensors, got a tensor on '
                f"{tensor.device}; move the module and its input with .{device_type}(), or use "
                'backend="torch".'
            )
    for tensor in others:
        if tensor is not None and tensor.device != x.device:
            raise ValueError(f"all tensors must be on {x.device}, got one on {tensor.device}")
    if x.dtype not in dtypes:
        *leading, last = (str(dtype).removeprefix("torch.") for dtype in dtypes)
        names = f"{', '.join(leading)} and {last}" if leading else last
        raise TypeError(f'backend="{backend}" supports {names}, got {x.dtype}')


def conv_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dilation: int,
    history: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate the causal-conv shapes; return x and history, contiguous, history in x.dtype
    (None when the kernel has no lag)."""
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
    lag = (weight.shape[1] - 1) * dilation
    if history is not None:
        expected = (lag, *x.shape[1:])
        if tuple(history.shape) != expected:
            raise ValueError(f"history has shape {tuple(history.shape)}, expected {expected}")
        history = history.to(x.dtype).contiguous() if lag > 0 else None
    return x.contiguous(), history


def dense_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """``x [T_in, M]``, ``weight [T_out, T_in]`` and ``T_out`` bias elements."""
    if x.dim() != 2 or weight.dim() != 2 or weight.shape[1] != x.shape[0]:
        raise ValueError(
            f"dense_fire needs x [T_in, M] and weight [T_out, T_in], got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if bias.numel() != weight.shape[0]:
        raise ValueError(f"bias must have T_out={weight.shape[0]} elements, got {bias.numel()}")
