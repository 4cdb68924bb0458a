"""``conv_channel_stats``: per-channel mean and variance of the charge, without storing it."""

from __future__ import annotations

import torch

from spikingjelly_psn.ops.fast.engine import BlockedConv


class ConvChannelStats(torch.autograd.Function):
    """Mean and biased variance of the causal convolution over ``T, B, S`` for each channel.

    Forward: the charge block by block, each block's statistics combined with the parallel
    variance formula. Backward: the charge again, turned in place into
    ``∂L/∂H = ∂L/∂μ / n + 2·∂L/∂σ² · (H − μ) / n``, then the convolution's transposes.
    """

    @staticmethod
    def forward(x, weight, history, dilation: int):
        return BlockedConv(x, weight, history, dilation).stats()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, history, dilation = inputs
        ctx.save_for_backward(x, weight, history, output[0])
        ctx.dilation = dilation

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        x, weight, history, mean = ctx.saved_tensors
        conv = BlockedConv(x, weight, history, ctx.dilation)
        count = x.numel() // x.shape[2]
        grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean.to(mean.dtype)
        grad_var = torch.zeros_like(mean) if grad_var is None else grad_var.to(mean.dtype)
        scale = grad_var * (2 / count)
        shift = grad_mean / count - scale * mean

        def gradient(block, h):
            return h.mul_(scale[block.c].view(-1, 1, 1)).add_(shift[block.c].view(-1, 1, 1))

        needs = ctx.needs_input_grad
        grad_x, grad_w, _, grad_history = conv.backward(
            gradient, (needs[0], needs[1], False, needs[2])
        )
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w, grad_history, None
