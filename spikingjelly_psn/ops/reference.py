"""The PyTorch implementation of every op: runs on any device and is the ground truth of the tests."""

from __future__ import annotations

import torch


def accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs, the widest input dtype otherwise (fp64 for gradcheck)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def dense_fire(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate_function
) -> torch.Tensor:
    """``Θ(weight @ x + bias)``, the same ``addmm`` SpikingJelly's PSN uses (bit-for-bit parity)."""
    return surrogate_function(torch.addmm(bias, weight, x))


def _padded(x: torch.Tensor, history: torch.Tensor | None, length: int) -> torch.Tensor:
    """``x`` with ``length`` earlier steps in front: the history, or zeros."""
    if length == 0:
        return x
    if history is None:
        history = x.new_zeros((length, *x.shape[1:]))
    elif history.shape != (length, *x.shape[1:]):
        raise ValueError(
            f"history has shape {tuple(history.shape)}, expected {(length, *x.shape[1:])}"
        )
    return torch.cat([history.to(x.dtype), x], dim=0)


def causal_conv_charge(
    x: torch.Tensor, weight: torch.Tensor, dilation: int, history: torch.Tensor | None = None
) -> torch.Tensor:
    """``H[t] = Σ_i weight[:, i] · x[t − (k−1−i)·dilation]`` in fp32 or wider, taps summed oldest first.

    Each output element sees the same sequence of operations whatever T is, so a sequence fed
    in chunks gives bit-identical charges to one call.
    """
    k = weight.shape[1]
    lag = (k - 1) * dilation
    T = x.shape[0]
    dtype = accumulation_dtype(x, weight)
    xp = _padded(x, history, lag).to(dtype)
    w = weight.to(dtype).view(1, 1, weight.shape[0], k, 1)
    h = None
    for i in range(k):
        start = i * dilation
        term = xp[start : start + T] * w[..., i, :]
        h = term if h is None else h + term
    return h


def causal_conv_fire(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    dilation: int,
    surrogate_function,
    history: torch.Tensor | None = None,
    power_of_two: bool = False,
) -> torch.Tensor:
    """Spikes ``Θ(H + bias)``; ``power_of_two`` changes nothing here (a multiply by ±2^e is exact)."""
    h = causal_conv_charge(x, weight, dilation, history)
    h = h + bias.to(h.dtype).view(1, 1, -1, 1)
    return surrogate_function(h).to(x.dtype)


def conv_channel_stats(
    x: torch.Tensor, weight: torch.Tensor, dilation: int, history: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of the charge, over ``T, B, S``."""
    h = causal_conv_charge(x, weight, dilation, history)
    var, mean = torch.var_mean(h, dim=(0, 1, 3), correction=0)
    return mean, var
