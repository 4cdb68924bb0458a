"""CPU kernels for the cupy backend's custom ops, so its Python glue runs end to end on the CPU.

Each kernel runs the launcher's own function (which kernel, which block shapes, its arguments
from ``_args``), with the launches going to the emulator of the compiled kernel code
(``Emulator.launch``), after asserting what the CUDA
launcher takes for granted (contiguous tensors, the input dtype for raw pointers, fp32
per-channel coefficients), so a wrapper that passes an argument the GPU would misread fails here.
"""

from __future__ import annotations

import torch

from spikingjelly_psn.ops.cupy import _launch, _source

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_input(x: torch.Tensor, rank: int) -> None:
    assert x.device.type == "cpu" and x.dim() == rank, (x.device, x.shape)
    assert x.dtype in DTYPES, x.dtype
    assert x.is_contiguous(), "x reaches the kernel as a raw pointer: it must be contiguous"


def _check_history(history, x, weight, dilation) -> None:
    if history is None:
        return
    lag = (weight.shape[1] - 1) * dilation
    assert lag > 0, "a history of length 0 must be passed as None"
    assert history.shape == (lag, *x.shape[1:]), (history.shape, x.shape)
    assert history.dtype == x.dtype and history.is_contiguous()


def _check_conv(x, weight, history, dilation) -> None:
    _check_input(x, 4)
    assert weight.dim() == 2 and weight.shape[0] in (1, x.shape[2]), weight.shape
    assert isinstance(dilation, int) and dilation >= 1
    _check_history(history, x, weight, dilation)


def _check_per_channel(t: torch.Tensor, channels: int) -> None:
    """A vector the launcher passes as a raw fp32 pointer."""
    assert t.dtype == torch.float32 and t.is_contiguous() and t.numel() == channels, (
        t.dtype,
        t.shape,
    )


class KernelLog:
    """What each CPU kernel was called with, for the tests that follow arguments through."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def add(self, name: str, **info) -> None:
        self.calls.append((name, info))

    def of(self, name: str) -> list[dict]:
        return [info for op, info in self.calls if op == name]

    def clear(self) -> None:
        self.calls.clear()


def cpu_kernels(log: KernelLog) -> dict:
    """The custom ops' CPU kernels: the launcher's own functions, after the checks above (the
    launches go to the emulator: see ``Emulator.launch``)."""

    def conv_fire(x, weight, bias, history, dilation, power_of_two, sg, p0, p1, p2, det):
        _check_conv(x, weight, history, dilation)
        assert bias.dim() == 1 and bias.numel() in (1, x.shape[2]), bias.shape
        log.add("fire", dtype=x.dtype, sg=sg, params=(p0, p1, p2), deterministic=det)
        return _launch.conv_fire_forward(x, weight, bias, history, dilation, power_of_two)

    def conv_backward(grad_s, x, weight, c0, c1, c2, history, dilation, mode, sg, p0, p1, p2,
                      det):  # fmt: skip
        _check_conv(x, weight, history, dilation)
        channels = x.shape[2]
        log.add("backward", mode=mode, sg=sg, params=(p0, p1, p2), deterministic=det)
        if mode == _source.MODE_FIRE:
            assert grad_s is not None and grad_s.shape == x.shape
            assert grad_s.dtype == x.dtype and grad_s.is_contiguous()
            assert c0.numel() in (1, channels) and c1 is None and c2 is None
        else:
            assert mode == _source.MODE_STATS and grad_s is None
            assert c0.numel() == channels
            _check_per_channel(c1, channels)
            _check_per_channel(c2, channels)
        return _launch.conv_backward(
            grad_s, x, weight, c0, c1, c2, history, dilation, mode, sg, (p0, p1, p2), det
        )

    def conv_stats(x, weight, history, dilation, det):
        _check_conv(x, weight, history, dilation)
        log.add("stats", dtype=x.dtype, deterministic=det)
        return _launch.conv_stats(x, weight, history, dilation)

    def dense_fire(x, weight, bias, sg, p0, p1, p2):
        _check_input(x, 2)
        assert weight.dim() == 2 and weight.shape[1] == x.shape[0]
        assert bias.numel() == weight.shape[0]
        log.add("dense", dtype=x.dtype, weight_dtype=weight.dtype, sg=sg, params=(p0, p1, p2))
        return _launch.dense_fire_forward(x, weight, bias)

    def dense_backward(grad_s, x, weight, bias, sg, p0, p1, p2):
        _check_input(x, 2)
        assert grad_s.shape == (weight.shape[0], x.shape[1])
        assert grad_s.dtype == x.dtype and grad_s.is_contiguous()
        log.add("dense_backward", sg=sg, params=(p0, p1, p2))
        return _launch.dense_backward(grad_s, x, weight, bias, sg, (p0, p1, p2))

    return {
        "causal_conv_fire": conv_fire,
        "causal_conv_backward": conv_backward,
        "conv_channel_stats": conv_stats,
        "dense_fire": dense_fire,
        "dense_backward": dense_backward,
    }


def check_without_device(x, *others):
    """``cupy_ops._check`` minus the CUDA-device, CuPy and GPU requirements."""
    for tensor in others:
        if tensor is not None:
            assert tensor.device == x.device
    if x.dtype not in DTYPES:
        raise TypeError(f'backend="cupy" supports float32, float16 and bfloat16, got {x.dtype}')
