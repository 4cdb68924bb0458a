"""``dense_fire`` (PSN, masked PSN): SpikingJelly's ``addmm`` with the charge never saved.

SpikingJelly's autograd keeps the charge ``H`` for the surrogate's backward and allocates one
``[T, N']`` temporary per op of the surrogate gradient. This function saves only its inputs,
recomputes ``H`` with the same ``addmm`` in the backward and runs the same gradient ops in
place, so spikes and gradients are SpikingJelly's bit for bit at a third of the memory.
"""

from __future__ import annotations

import torch

from spikingjelly_psn.ops.fast.amp import no_autocast
from spikingjelly_psn.ops.fast.firing import atan_grad_, fire_


class DenseFire(torch.autograd.Function):
    """``Θ(weight @ x + bias)`` with the spiking-ATan surrogate gradient."""

    @staticmethod
    def forward(x, weight, bias, alpha: float):
        return fire_(torch.addmm(bias, weight, x))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, alpha = inputs
        ctx.save_for_backward(x, weight, bias)
        ctx.alpha = alpha

    @staticmethod
    def backward(ctx, grad_spikes):
        x, weight, bias = ctx.saved_tensors
        with no_autocast(x):
            grad_h = atan_grad_(torch.addmm(bias, weight, x), grad_spikes, ctx.alpha)
            need_x, need_w, need_b, _ = ctx.needs_input_grad
            grad_x = grad_w = None
            # the products autograd forms for addmm, in its orientation (column-major stays so)
            if need_x:
                grad_x = grad_h.t().mm(weight).t() if _column_major(x) else weight.t().mm(grad_h)
            if need_w:
                grad_w = x.mm(grad_h.t()).t() if _column_major(weight) else grad_h.mm(x.t())
            grad_b = grad_h.sum_to_size(bias.shape) if need_b else None
            return grad_x, grad_w, grad_b, None


def _column_major(t: torch.Tensor) -> bool:
    return t.stride(0) == 1 and t.stride(1) == t.shape[0]
