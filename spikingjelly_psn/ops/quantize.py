"""The power-of-two weight quantizer of MFPSN, with a straight-through gradient."""

from __future__ import annotations

import torch


def power_of_two_exponent(
    w: torch.Tensor, exp_min: int | None = None, exp_max: int | None = None
) -> torch.Tensor:
    """``round(log2|w|)`` (half to even), clamped to the optional bounds; 0 where ``w == 0``."""
    e = torch.round(torch.log2(w.abs()))
    if exp_min is not None or exp_max is not None:
        e = e.clamp(exp_min, exp_max)
    return torch.where(w == 0, torch.zeros_like(e), e)


def power_of_two_values(
    w: torch.Tensor, exp_min: int | None = None, exp_max: int | None = None
) -> torch.Tensor:
    """``Q(w) = sign(w) · 2^round(log2|w|)``, with ``Q(0) = 0``."""
    e = power_of_two_exponent(w, exp_min, exp_max)
    return torch.sign(w) * torch.exp2(e)


class _PowerOfTwoSTE(torch.autograd.Function):
    """Quantize in the forward; identity gradient through the whole quantizer (``∂Q/∂w := 1``)."""

    @staticmethod
    def forward(w: torch.Tensor, exp_min: int | None, exp_max: int | None) -> torch.Tensor:
        return power_of_two_values(w, exp_min, exp_max)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def quantize_power_of_two(
    w: torch.Tensor, exp_min: int | None = None, exp_max: int | None = None
) -> torch.Tensor:
    """Power-of-two weights for the forward, the latent float weights' gradient for the backward.

    The whole quantizer is one straight-through estimator: an STE on the rounding alone gives
    ``2^round(log2|w|)/|w|``, which jumps, oscillates near 0 and is NaN at 0 (the MFPSN paper, App. G).
    """
    return _PowerOfTwoSTE.apply(w, exp_min, exp_max)
