"""The kernels as ``torch.library`` custom ops (namespace ``spikingjelly_psn``), each with a fake
implementation (shapes only, for torch.compile and meta/fake tensors) and an autograd formula.

Forward ops save only their input ``x`` (plus history, weights and per-channel vectors); the
backward ops recompute the charge from it.
"""

import torch
from torch import Tensor

from . import _host, _launch
from ._source import MODE_FIRE, MODE_STATS

NAMESPACE = "spikingjelly_psn"


def _check_conv_shapes(x: Tensor, weight: Tensor, history: Tensor | None, dilation: int) -> None:
    """The shapes the conv kernels read (a fake checks them as the real op's caller does)."""
    torch._check(x.dim() == 4, lambda: f"x must be [T, B, C, S], got {tuple(x.shape)}")
    torch._check(
        weight.dim() == 2 and (weight.shape[0] == 1 or weight.shape[0] == x.shape[2]),
        lambda: f"weight must be [C, k] or [1, k] with C={x.shape[2]}, got {tuple(weight.shape)}",
    )
    if history is not None:
        expected = ((weight.shape[1] - 1) * dilation, *x.shape[1:])
        torch._check(
            tuple(history.shape) == expected,
            lambda: f"history has shape {tuple(history.shape)}, expected {expected}",
        )


def _check_dense_shapes(x: Tensor, weight: Tensor, bias: Tensor) -> None:
    """x [T_in, M], weight [T_out, T_in], T_out bias elements."""
    torch._check(
        x.dim() == 2 and weight.dim() == 2 and weight.shape[1] == x.shape[0],
        lambda: (
            f"need x [T_in, M] and weight [T_out, T_in], got {tuple(x.shape)}, {tuple(weight.shape)}"
        ),
    )
    torch._check(
        bias.numel() == weight.shape[0], lambda: f"bias must have {weight.shape[0]} elements"
    )


# ---------------------------------------------------------------- causal conv + fire


@torch.library.custom_op(f"{NAMESPACE}::causal_conv_fire", mutates_args=(), device_types="cuda")
def causal_conv_fire(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    history: Tensor | None,
    dilation: int,
    power_of_two: bool,
    sg: int,
    p0: float,
    p1: float,
    p2: float,
    deterministic: bool,
) -> Tensor:
    """Spikes of the causal conv; the surrogate and ``deterministic`` only matter to backward."""
    return _launch.conv_fire_forward(x, weight, bias, history, dilation, power_of_two)


@causal_conv_fire.register_fake
def _(x, weight, bias, history, dilation, power_of_two, sg, p0, p1, p2, deterministic):
    _check_conv_shapes(x, weight, history, dilation)
    torch._check(bias.dim() == 1 and (bias.numel() == 1 or bias.numel() == x.shape[2]))
    return torch.empty_like(x)


@torch.library.custom_op(f"{NAMESPACE}::causal_conv_backward", mutates_args=(), device_types="cuda")
def causal_conv_backward(
    grad_s: Tensor | None,
    x: Tensor,
    weight: Tensor,
    c0: Tensor,
    c1: Tensor | None,
    c2: Tensor | None,
    history: Tensor | None,
    dilation: int,
    mode: int,
    sg: int,
    p0: float,
    p1: float,
    p2: float,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    """grad_x and the per-channel [C, k+1] weight/bias gradient sums (fire or statistics).

    Power-of-two taps need no flag here: the backward multiplies, which is bit-identical."""
    return _launch.conv_backward(
        grad_s, x, weight, c0, c1, c2, history, dilation, mode, sg, (p0, p1, p2), deterministic
    )


@causal_conv_backward.register_fake
def _(grad_s, x, weight, c0, c1, c2, history, dilation, mode, sg, p0, p1, p2, det):
    _check_conv_shapes(x, weight, history, dilation)
    torch._check(grad_s is None or grad_s.shape == x.shape, lambda: "grad_s must be shaped as x")
    return torch.empty_like(x), x.new_empty((x.shape[2], weight.shape[1] + 1), dtype=torch.float32)


def _conv_fire_setup(ctx, inputs, output) -> None:
    x, weight, bias, history, dilation, power_of_two, sg, p0, p1, p2, deterministic = inputs
    ctx.save_for_backward(x, weight, bias, history)
    ctx.config = (dilation, sg, p0, p1, p2, deterministic)


def _conv_fire_backward(ctx, grad_s):
    x, weight, bias, history = ctx.saved_tensors
    dilation, sg, p0, p1, p2, deterministic = ctx.config
    grad_x, gwb = causal_conv_backward(
        grad_s.to(x.dtype).contiguous(), x, weight, bias, None, None, history, dilation,
        MODE_FIRE, sg, p0, p1, p2, deterministic,
    )  # fmt: skip
    grad_w, grad_b = _host.split_weight_bias_grad(gwb, weight, bias)
    return grad_x, grad_w, grad_b, None, None, None, None, None, None, None, None


causal_conv_fire.register_autograd(_conv_fire_backward, setup_context=_conv_fire_setup)

# ---------------------------------------------------------------- statistics of the charge


@torch.library.custom_op(f"{NAMESPACE}::conv_channel_stats", mutates_args=(), device_types="cuda")
def conv_channel_stats(
    x: Tensor, weight: Tensor, history: Tensor | None, dilation: int, deterministic: bool
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance (fp32) of the causal conv's charge."""
    return _launch.conv_stats(x, weight, history, dilation)


@conv_channel_stats.register_fake
def _(x, weight, history, dilation, deterministic):
    _check_conv_shapes(x, weight, history, dilation)
    channels = x.shape[2]
    return x.new_empty((channels,), dtype=torch.float32), x.new_empty(
        (channels,), dtype=torch.float32
    )


def _stats_setup(ctx, inputs, output) -> None:
    x, weight, history, dilation, deterministic = inputs
    ctx.save_for_backward(x, weight, history, output[0])
    ctx.config = (dilation, deterministic)


def _stats_backward(ctx, grad_mean, grad_var):
    x, weight, history, mean = ctx.saved_tensors
    dilation, deterministic = ctx.config
    count = x.shape[0] * x.shape[1] * x.shape[3]
    c1, c2 = _host.stats_grad_coefficients(grad_mean, grad_var, mean, count)
    grad_x, gwb = causal_conv_backward(
        None, x, weight, mean, c1, c2, history, dilation, MODE_STATS, 0, 0.0, 0.0, 0.0,
        deterministic,
    )  # fmt: skip
    grad_w, _ = _host.split_weight_bias_grad(gwb, weight, None)
    return grad_x, grad_w, None, None, None


conv_channel_stats.register_autograd(_stats_backward, setup_context=_stats_setup)

# ---------------------------------------------------------------- dense mix + fire


@torch.library.custom_op(f"{NAMESPACE}::dense_fire", mutates_args=(), device_types="cuda")
def dense_fire(
    x: Tensor, weight: Tensor, bias: Tensor, sg: int, p0: float, p1: float, p2: float
) -> Tensor:
    """Spikes Θ(weight @ x + bias); the surrogate only matters to backward."""
    return _launch.dense_fire_forward(x, weight, bias)


@dense_fire.register_fake
def _(x, weight, bias, sg, p0, p1, p2):
    _check_dense_shapes(x, weight, bias)
    return x.new_empty((weight.shape[0], x.shape[1]))


@torch.library.custom_op(f"{NAMESPACE}::dense_backward", mutates_args=(), device_types="cuda")
def dense_backward(
    grad_s: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    sg: int,
    p0: float,
    p1: float,
    p2: float,
) -> tuple[Tensor, Tensor]:
    """grad_x and g = dLoss/dH [T_out, M] (fp32)."""
    return _launch.dense_backward(grad_s, x, weight, bias, sg, (p0, p1, p2))


@dense_backward.register_fake
def _(grad_s, x, weight, bias, sg, p0, p1, p2):
    _check_dense_shapes(x, weight, bias)
    torch._check(
        tuple(grad_s.shape) == (weight.shape[0], x.shape[1]), lambda: "grad_s must be [T_out, M]"
    )
    return torch.empty_like(x), x.new_empty((weight.shape[0], x.shape[1]), dtype=torch.float32)


def _dense_setup(ctx, inputs, output) -> None:
    x, weight, bias, sg, p0, p1, p2 = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.config = (sg, p0, p1, p2)


def _dense_backward(ctx, grad_s):
    x, weight, bias = ctx.saved_tensors
    grad_x, g = dense_backward(grad_s.to(x.dtype).contiguous(), x, weight, bias, *ctx.config)
    grad_w = (g @ x.t().float()).to(weight.dtype)
    grad_b = g.sum(dim=1, keepdim=True).reshape(bias.shape).to(bias.dtype)
    return grad_x, grad_w, grad_b, None, None, None, None


dense_fire.register_autograd(_dense_backward, setup_context=_dense_setup)
