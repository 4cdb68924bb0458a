"""``causal_conv_fire``: the causal convolution fired, saving only its inputs for the backward.

A shared weight (sliding PSN) charges with the ``torch.addmm`` of SpikingJelly's ``SlidingPSN``
on a ``[T, T]`` Toeplitz matrix, so a whole sequence gives its spikes bit for bit (under autocast
too); per-channel weights (MFPSN) charge block by block in fp32 (:mod:`.engine`). The backward
recomputes the charge block by block and differentiates it in fp32 either way.
"""

from __future__ import annotations

import torch

from spikingjelly_psn.ops.fast.amp import no_autocast
from spikingjelly_psn.ops.fast.blocks import Blocking
from spikingjelly_psn.ops.fast.engine import BlockedConv
from spikingjelly_psn.ops.fast.firing import Generic, LeanATan
from spikingjelly_psn.ops.fast.toeplitz import tap_map, toeplitz
from spikingjelly_psn.ops.reference import accumulation_dtype


def gemm_dtype(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.dtype:
    """The dtype of the shared-weight GEMM: the common dtype, as ``addmm`` needs, else fp32+."""
    if x.dtype == weight.dtype == bias.dtype:
        return x.dtype
    return accumulation_dtype(x, weight, bias)


def shared_charge(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    dilation: int,
    history: torch.Tensor | None,
) -> torch.Tensor:
    """``[T, M]`` charge plus bias for ``x [T, M]`` and one shared ``weight [1, k]``, by ``addmm``.

    The same ``addmm(bias, W, x)`` as SpikingJelly's ``SlidingPSN``; a history adds the taps
    that reach back into it to the first steps, in place. Differentiable.
    """
    dtype = gemm_dtype(x, weight, bias)
    k, T = weight.shape[1], x.shape[0]
    w = weight.to(dtype)
    h = torch.addmm(
        bias.to(dtype), toeplitz(w, tap_map(k, dilation, T, T, 0, x.device))[0], x.to(dtype)
    )
    if history is not None:
        lag, rows = history.shape[0], min(history.shape[0], T)
        a = toeplitz(w, tap_map(k, dilation, rows, lag, lag, x.device))[0]
        h[:rows].addmm_(a, history.to(dtype))
    return h


class CausalConvFire(torch.autograd.Function):
    """Spikes of ``x [T, B, C, S]`` (``[T, 1, 1, M]`` for a shared weight); saves only inputs."""

    @staticmethod
    def forward(x, weight, bias, history, dilation: int, firing: LeanATan | Generic):
        if weight.shape[0] == 1:
            T = x.shape[0]
            h2 = None if history is None else history.reshape(history.shape[0], -1)
            h = shared_charge(x.view(T, -1), weight, bias, dilation, h2)
            spikes = firing.fire(h)
            return spikes.to(x.dtype).view(x.shape)
        conv = BlockedConv(x, weight, history, dilation)
        b = bias.to(conv.dtype).expand(weight.shape[0])
        return conv.forward(
            torch.empty_like(x), lambda block, rows, h: firing.fire(h.add_(conv.bias(b, block)))
        )

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, history, dilation, firing = inputs
        ctx.save_for_backward(x, weight, bias, history)
        ctx.dilation, ctx.firing = dilation, firing

    @staticmethod
    def backward(ctx, grad_spikes):
        x, weight, bias, history = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grads = fire_backward(
            x, weight, bias, history, ctx.dilation, ctx.firing, grad_spikes, needs[:4]
        )
        return *grads, None, None


def fire_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    history: torch.Tensor | None,
    dilation: int,
    firing: LeanATan | Generic,
    grad_spikes: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    """Gradients ``(x, weight, bias, history)`` of the spikes, where ``needs`` asks for them,
    from the charge recomputed block by block."""
    with no_autocast(x):
        conv = BlockedConv(x, weight, history, dilation)
        b = bias.to(conv.dtype).expand(weight.shape[0])

        def gradient(block, rows, h):
            h.add_(conv.bias(b, block))
            upstream = conv.blocking.view(grad_spikes, block)[:, rows]
            return firing.grad(Blocking.unflat(h, block), upstream).reshape(h.shape)

        grad_x, grad_w, grad_b, grad_history = conv.backward(gradient, tuple(needs))
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.sum_to_size(bias.shape).to(bias.dtype)
        return grad_x, grad_w, grad_b, grad_history
