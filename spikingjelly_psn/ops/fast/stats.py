"""``conv_channel_stats``: per-channel mean and variance of the charge, without storing it."""

from __future__ import annotations

import torch

from spikingjelly_psn.ops.fast.amp import no_autocast
from spikingjelly_psn.ops.fast.engine import BlockedConv


class ConvChannelStats(torch.autograd.Function):
    """Mean and biased variance of the causal convolution over ``T, B, S`` for each channel.

    Forward: the charge block by block, each block's statistics combined with the parallel
    variance formula. ``∂L/∂H = ∂L/∂μ / n + 2·∂L/∂σ² · (H − μ) / n = scale·H + shift`` per
    channel is linear in H, so the backward needs no charge: with ``moments`` the forward also
    sums ``H·x[t − lag_i]`` and ``x[t − lag_i]`` per tap (the weight gradient combines them) and
    the input gradient is one GEMM pass with ``AᵀA``. With a history, the backward recomputes
    the charge and transposes it (:meth:`BlockedConv.backward`).
    """

    @staticmethod
    def forward(x, weight, history, dilation: int, moments: bool):
        conv = BlockedConv(x, weight, history, dilation)
        if not moments:
            return (*conv.stats(), x.new_empty(0), x.new_empty(0))
        return conv.stats(moments=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, history, dilation, _ = inputs
        mean, _, products, shifted = output
        ctx.mark_non_differentiable(products, shifted)
        ctx.save_for_backward(x, weight, history, mean, products, shifted)
        ctx.dilation = dilation

    @staticmethod
    def backward(ctx, grad_mean, grad_var, *_):
        x, weight, history, mean, products, shifted = ctx.saved_tensors
        with no_autocast(x):
            conv = BlockedConv(x, weight, history, ctx.dilation)
            scale, shift = charge_gradient(grad_mean, grad_var, mean, x.numel() // x.shape[2])
            need_x, need_w, need_history = ctx.needs_input_grad[:3]
            if products.numel():
                grad_x = conv.variance_input_gradient(scale, shift) if need_x else None
                grad_w = scale.unsqueeze(1) * products + shift.unsqueeze(1) * shifted
                return grad_x, grad_w.to(weight.dtype) if need_w else None, None, None, None

            def gradient(block, rows, h):
                return h.mul_(scale[block.c].view(-1, 1, 1)).add_(shift[block.c].view(-1, 1, 1))

            grad_x, grad_w, _, grad_history = conv.backward(
                gradient, (need_x, need_w, False, need_history)
            )
            if grad_w is not None:
                grad_w = grad_w.to(weight.dtype)
            return grad_x, grad_w, grad_history, None, None


def charge_gradient(
    grad_mean: torch.Tensor | None, grad_var: torch.Tensor | None, mean: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` per channel with ``∂L/∂H = scale·H + shift``, from the gradients of
    the mean and the biased variance over ``count`` values (``None`` counts as zero)."""
    grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean.to(mean.dtype)
    grad_var = torch.zeros_like(mean) if grad_var is None else grad_var.to(mean.dtype)
    scale = grad_var * (2 / count)
    return scale, grad_mean / count - scale * mean
