"""``batchnorm_conv_fire``: MFPSN's batch-norm threshold in training, as one autograd function.

As separate ops (statistics, fold, fire) the backward writes two input gradients the size of
the input, one per op, and autograd adds them: a third ``[T, N']`` pass, and fresh memory
whose first touch costs as much as the arithmetic on a CPU. Here the fold's gradient is known
before the statistics' input gradient is formed, so that gradient is added to the firing's
in place, tile by tile: one input gradient, written once and updated once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spikingjelly_psn.ops.fast.amp import no_autocast
from spikingjelly_psn.ops.fast.conv import CausalConvFire, fire_backward
from spikingjelly_psn.ops.fast.engine import BlockedConv
from spikingjelly_psn.ops.fast.firing import Generic, LeanATan
from spikingjelly_psn.ops.fast.stats import charge_gradient

#: ``fold(mean, var, *params) -> (weight, bias)``: differentiable, on ``[C]``/``[C, k]`` tensors.
Fold = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class BatchNormConvFire(torch.autograd.Function):
    """Spikes of ``x [T, B, C, S]`` convolved with the weights ``fold`` makes from the batch
    statistics of its charge under ``weight [C, k]``; also returns those statistics.

    Forward: one pass for the statistics (with the moments their weight gradient needs, see
    :class:`.stats.ConvChannelStats`), the fold on ``[C, k]``, one pass to fire. Backward: the
    firing's gradients with the charge recomputed, the fold's gradient by autograd on
    ``[C, k]``, then the statistics' input gradient added to the firing's in one GEMM pass.
    """

    @staticmethod
    def forward(x, weight, dilation: int, firing: LeanATan | Generic, fold: Fold, *params):
        conv = BlockedConv(x, weight, None, dilation)
        mean, var, products, shifted = conv.stats(moments=True)
        folded_weight, folded_bias = fold(mean, var, *params)
        spikes = CausalConvFire.forward(x, folded_weight, folded_bias, None, dilation, firing)
        return spikes, mean, var, products, shifted

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, dilation, firing, fold, *params = inputs
        _, mean, var, products, shifted = output
        ctx.mark_non_differentiable(mean, var, products, shifted)
        ctx.save_for_backward(x, weight, mean, var, products, shifted, *params)
        ctx.dilation, ctx.firing, ctx.fold = dilation, firing, fold

    @staticmethod
    def backward(ctx, grad_spikes, *_):
        x, weight, mean, var, products, shifted, *params = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        need_params = ctx.needs_input_grad[5:]
        with no_autocast(x), torch.enable_grad():
            stats = [t.detach().requires_grad_() for t in (mean, var)]
            leaves = [p.detach().requires_grad_(need) for p, need in zip(params, need_params)]
            folded_weight, folded_bias = ctx.fold(*stats, *leaves)
        grad_x, grad_fw, grad_fb, _ = fire_backward(
            x, folded_weight.detach(), folded_bias.detach(), None, ctx.dilation, ctx.firing,
            grad_spikes, (need_x, True, True, False),
        )  # fmt: skip
        wanted = stats + [leaf for leaf in leaves if leaf.requires_grad]
        grads = iter(
            torch.autograd.grad(
                (folded_weight, folded_bias), wanted, (grad_fw, grad_fb), allow_unused=True
            )
        )
        grad_mean, grad_var = next(grads), next(grads)
        grad_params = [next(grads) if leaf.requires_grad else None for leaf in leaves]
        with no_autocast(x):
            scale, shift = charge_gradient(grad_mean, grad_var, mean, x.numel() // x.shape[2])
            if need_x:
                conv = BlockedConv(x, weight, None, ctx.dilation)
                conv.variance_input_gradient(scale, shift, into=grad_x)
            grad_w = None
            if need_w:
                grad_w = scale.unsqueeze(1) * products + shift.unsqueeze(1) * shifted
                grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w, None, None, None, *grad_params
