"""Random inputs of the causal-conv op, shared by the emulation, glue and CUDA tests."""

from __future__ import annotations

import torch


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def conv_inputs(
    g: torch.Generator,
    shape: tuple[int, int, int, int],
    k: int,
    dilation: int,
    dtype: torch.dtype,
    *,
    weight_rows: int,
    bias_rows: int,
    history: bool,
    pow2: bool = False,
    zero_fraction: float = 0.0,
    weight_scale: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x [T, B, C, S]`` in ``dtype``, fp32 ``weight [rows, k]`` and ``bias``, and a history of
    ``(k-1)*dilation`` steps (empty when that is 0) when asked; drawn from ``g`` in that order.

    With ``pow2`` the weights are rounded to powers of two and ``zero_fraction`` of them zeroed.
    """
    device = g.device
    x = torch.randn(shape, generator=g, device=device).to(dtype)
    w = torch.randn(weight_rows, k, generator=g, device=device) * weight_scale
    if pow2:
        w = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs())))
        if zero_fraction:
            w[torch.rand(w.shape, generator=g, device=device) < zero_fraction] = 0.0
    b = torch.randn(bias_rows, generator=g, device=device) * 0.3
    lag = (k - 1) * dilation
    hist = torch.randn(lag, *shape[1:], generator=g, device=device).to(dtype) if history else None
    return x, w, b, hist
