"""The Python glue of ``backend="cupy"`` run end to end on the CPU, forward and backward.

The custom ops of ``spikingjelly_psn.ops.cupy._ops`` get CPU kernels (for this module only)
that run the compiled kernel code through the emulator of ``tests/cupy_support``, with exactly
the arguments each op receives. Everything above the kernels is the package's own code: the
public wrappers (surrogate encoding, argument conversion, history and bias shapes, autocast),
the ops' ``setup_context``/backward formulas and the host helpers that split and scale the
kernels' gradient sums, up to the plugin neurons. Results are compared with the torch backend.

Each CPU kernel first asserts what the CUDA launcher takes for granted (contiguous tensors,
the input dtype for raw pointers, fp32 per-channel coefficients), so a wrapper that passes an
argument the GPU would misread fails here too.
"""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from cupy_support.emulation import Emulator, build, compiler
from spikingjelly.activation_based import functional, surrogate

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.neuron.masked_psn import MaskedPSN
from spikingjelly_psn.neuron.mfpsn import MFPSN
from spikingjelly_psn.neuron.psn import PSN
from spikingjelly_psn.neuron.sliding_psn import SlidingPSN
from spikingjelly_psn.ops import reference, surrogates
from spikingjelly_psn.ops.cupy import _ops, _source

if compiler() is None:
    pytest.skip(
        "g++ is not installed (needed to compile the kernels for the CPU)", allow_module_level=True
    )

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SURROGATES = [surrogate.ATan(), surrogate.Sigmoid(alpha=2.5), surrogate.PiecewiseQuadratic(1.5)]

# ---------------------------------------------------------------- CPU kernels of the custom ops


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


def _cpu_kernels(emu: Emulator, log: KernelLog) -> dict:
    def conv_fire(x, weight, bias, history, dilation, power_of_two, sg, p0, p1, p2, det):
        _check_conv(x, weight, history, dilation)
        assert bias.dim() == 1 and bias.numel() in (1, x.shape[2]), bias.shape
        log.add("fire", dtype=x.dtype, sg=sg, params=(p0, p1, p2), deterministic=det)
        return emu.conv_fire(x, weight, bias, dilation, history, power_of_two)

    def conv_backward(grad_s, x, weight, c0, c1, c2, history, dilation, mode, sg, p0, p1, p2,
                      det):  # fmt: skip
        _check_conv(x, weight, history, dilation)
        channels = x.shape[2]
        log.add("backward", mode=mode, sg=sg, params=(p0, p1, p2), deterministic=det)
        if mode == _source.MODE_FIRE:
            assert grad_s is not None and grad_s.shape == x.shape
            assert grad_s.dtype == x.dtype and grad_s.is_contiguous()
            assert c0.numel() in (1, channels) and c1 is None and c2 is None
            grad_x, _, gwb = emu.conv_backward(
                grad_s, x, weight, c0, dilation, sg, (p0, p1, p2), history, det
            )
        else:
            assert mode == _source.MODE_STATS and grad_s is None
            assert c0.numel() == channels
            _check_per_channel(c1, channels)
            _check_per_channel(c2, channels)
            stats = (c0.float().contiguous(), c1, c2)  # c0 as the launcher converts it
            grad_x, _, gwb = emu.conv_backward(
                None, x, weight, None, dilation, 0, (0.0, 0.0, 0.0), history, det, stats=stats
            )
        return grad_x, gwb

    def conv_stats(x, weight, history, dilation, det):
        _check_conv(x, weight, history, dilation)
        log.add("stats", dtype=x.dtype, deterministic=det)
        return emu.conv_stats(x, weight, dilation, history)

    def dense_fire(x, weight, bias, sg, p0, p1, p2):
        _check_input(x, 2)
        assert weight.dim() == 2 and weight.shape[1] == x.shape[0]
        assert bias.numel() == weight.shape[0]
        log.add("dense", dtype=x.dtype, weight_dtype=weight.dtype, sg=sg, params=(p0, p1, p2))
        return emu.dense_fire(x, weight, bias)

    def dense_backward(grad_s, x, weight, bias, sg, p0, p1, p2):
        _check_input(x, 2)
        assert grad_s.shape == (weight.shape[0], x.shape[1])
        assert grad_s.dtype == x.dtype and grad_s.is_contiguous()
        log.add("dense_backward", sg=sg, params=(p0, p1, p2))
        return emu.dense_backward(grad_s, x, weight, bias, sg, (p0, p1, p2))

    return {
        "causal_conv_fire": conv_fire,
        "causal_conv_backward": conv_backward,
        "conv_channel_stats": conv_stats,
        "dense_fire": dense_fire,
        "dense_backward": dense_backward,
    }


@pytest.fixture(scope="module")
def kernel_log():
    """CPU kernels for the custom ops while this module runs; removed again afterwards, so
    other test modules still see ops without a CPU kernel."""
    log = KernelLog()
    library = torch.library.Library(_ops.NAMESPACE, "IMPL")
    try:
        for name, fn in _cpu_kernels(Emulator(build(), launch="gpu"), log).items():
            library.impl(name, fn, "CPU")
        yield log
    finally:
        library._destroy()


def _check_without_device(x, *others):
    """``cupy_ops._check`` minus the CUDA-device, CuPy and GPU requirements."""
    for tensor in others:
        if tensor is not None:
            assert tensor.device == x.device
    if x.dtype not in DTYPES:
        raise TypeError(f'backend="cupy" supports float32, float16 and bfloat16, got {x.dtype}')


@pytest.fixture(autouse=True)
def cpu_glue(kernel_log, monkeypatch, cupy_installed):
    """Let the cupy backend accept CPU tensors, in this module's tests only."""
    monkeypatch.setattr(cupy_ops, "_check", _check_without_device)
    monkeypatch.setattr(cupy_ops, "_DETERMINISTIC", False)
    kernel_log.clear()
    return kernel_log


# ---------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def _tol(dtype: torch.dtype) -> dict:
    return {
        torch.float32: {"rtol": 1e-4, "atol": 1e-5},
        torch.float16: {"rtol": 2e-3, "atol": 2e-3},
        torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
    }[dtype]


def _close(got: torch.Tensor, want: torch.Tensor, **tol) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    torch.testing.assert_close(got.float(), want.float(), **tol)


# ---------------------------------------------------------------- causal conv + fire

CONV_CASES = {
    # name: (T, B, C, S, k, dilation, weight rows, bias shape, history, power_of_two)
    "per-channel": (8, 2, 3, 5, 3, 1, "C", "C", False, False),
    "shared-weight-and-bias": (7, 2, 4, 3, 4, 1, "1", "1", False, False),
    "shared-weight-channel-bias": (6, 3, 3, 2, 3, 2, "1", "C", True, False),
    "channel-weight-shared-bias": (6, 2, 3, 4, 2, 1, "C", "1", False, False),
    "dilation-3-history": (9, 2, 2, 3, 3, 3, "C", "C", True, False),
    "T-less-than-k": (2, 2, 3, 3, 5, 2, "C", "C", False, False),
    "T-1-history": (1, 3, 2, 4, 4, 1, "C", "C", True, False),
    "power-of-two": (7, 2, 3, 4, 4, 2, "C", "C", True, True),
    "k-1-empty-history": (5, 2, 3, 3, 1, 1, "C", "C", True, False),
    "one-channel-scalar-bias": (8, 2, 1, 6, 3, 1, "1", "0-d", True, False),
}


def _conv_inputs(case, dtype, seed, weight_dtype=torch.float32):
    T, B, C, S, k, d, rows, bias_shape, with_history, pow2 = case
    g = _gen(seed)
    x = torch.randn(T, B, C, S, generator=g).to(dtype)
    w = torch.randn(C if rows == "C" else 1, k, generator=g) * 0.8
    if pow2:
        w = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs())))
        w[torch.rand(w.shape, generator=g) < 0.2] = 0.0
    w = w.to(weight_dtype)
    b = torch.randn(C if bias_shape == "C" else 1, generator=g) * 0.3
    if bias_shape == "0-d":
        b = b.reshape(())
    lag = (k - 1) * d
    hist = torch.randn(lag, B, C, S, generator=g).to(dtype) if with_history else None
    grad_s = torch.randn(T, B, C, S, generator=g).to(dtype)
    return x, w, b, hist, grad_s


def _conv_run(fn, x, w, b, d, sg_fn, hist, pow2, grad_s):
    xl, wl, bl = _leaves(x, w, b)
    s = fn(xl, wl, bl, d, sg_fn, hist, pow2)
    s.backward(grad_s)
    return s, xl.grad, wl.grad, bl.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES), ids=str)
def test_causal_conv_fire_matches_reference(cpu_glue, case, dtype):
    spec = CONV_CASES[case]
    x, w, b, hist, grad_s = _conv_inputs(spec, dtype, seed=len(case))
    d, pow2 = spec[5], spec[9]
    sg_fn = SURROGATES[len(case) % len(SURROGATES)]
    s, gx, gw, gb = _conv_run(cupy_ops.causal_conv_fire, x, w, b, d, sg_fn, hist, pow2, grad_s)
    rs, rgx, rgw, rgb = _conv_run(reference.causal_conv_fire, x, w, b, d, sg_fn, hist, pow2, grad_s)
    assert s.dtype == dtype and torch.equal(s, rs)
    assert 0 < s.float().mean() < 1
    _close(gx, rgx, **_tol(dtype))
    _close(gw, rgw, rtol=1e-4, atol=1e-4)
    _close(gb, rgb, rtol=1e-4, atol=1e-4)
    (fire,) = cpu_glue.of("fire")
    (bwd,) = cpu_glue.of("backward")
    sg_id, params = surrogates.encode(sg_fn, "cupy")
    assert fire["sg"] == bwd["sg"] == sg_id and bwd["params"] == params
    assert bwd["mode"] == _source.MODE_FIRE


@pytest.mark.parametrize("sg_fn", SURROGATES, ids=repr)
def test_conv_surrogates_and_low_precision_weights(sg_fn):
    """bf16 weights and input; the weight gradient comes back in the weight's dtype."""
    spec = CONV_CASES["per-channel"]
    x, w, b, hist, grad_s = _conv_inputs(spec, torch.bfloat16, 3, weight_dtype=torch.bfloat16)
    b = b.to(torch.bfloat16)
    s, gx, gw, gb = _conv_run(cupy_ops.causal_conv_fire, x, w, b, 1, sg_fn, hist, False, grad_s)
    rs, rgx, rgw, rgb = _conv_run(
        reference.causal_conv_fire, x, w, b, 1, sg_fn, hist, False, grad_s
    )
    assert torch.equal(s, rs)
    tol = _tol(torch.bfloat16)
    _close(gx, rgx, **tol)
    _close(gw, rgw, **tol)
    _close(gb, rgb, **tol)


def test_conv_non_contiguous_input_and_history_in_another_dtype():
    """x a transposed view, history fp32 while x is fp16: the wrapper converts both."""
    T, B, C, S, k, d = 6, 2, 3, 4, 3, 2
    g = _gen(5)
    x = torch.randn(T, B, S, C, generator=g).to(torch.float16).transpose(2, 3)
    assert not x.is_contiguous()
    w, b = torch.randn(C, k, generator=g), torch.randn(C, generator=g) * 0.2
    hist = torch.randn((k - 1) * d, B, C, S, generator=g)
    grad_s = torch.randn(T, B, C, S, generator=g).to(torch.float16)
    sg_fn = surrogate.ATan()
    s, gx, gw, gb = _conv_run(cupy_ops.causal_conv_fire, x, w, b, d, sg_fn, hist, False, grad_s)
    rs, rgx, rgw, rgb = _conv_run(
        reference.causal_conv_fire, x, w, b, d, sg_fn, hist, False, grad_s
    )
    assert torch.equal(s, rs)
    _close(gx, rgx, **_tol(torch.float16))
    _close(gw, rgw, rtol=1e-4, atol=1e-4)
    _close(gb, rgb, rtol=1e-4, atol=1e-4)


def test_history_gets_no_gradient():
    x, w, b, hist, grad_s = _conv_inputs(CONV_CASES["dilation-3-history"], torch.float32, 1)
    hist = hist.clone().requires_grad_(True)
    xl, wl, bl = _leaves(x, w, b)
    cupy_ops.causal_conv_fire(xl, wl, bl, 3, surrogate.ATan(), hist).backward(grad_s)
    assert hist.grad is None and xl.grad is not None


def _deterministic_grads(fn):
    x, w, b, hist, grad_s = _conv_inputs(CONV_CASES["shared-weight-channel-bias"], torch.float32, 2)
    xl, wl, bl = _leaves(x, w, b)
    fn(xl, wl, bl, hist).backward(grad_s)
    return xl.grad, wl.grad, bl.grad


def test_deterministic_mode_reaches_the_kernels_and_gives_the_same_gradients(cpu_glue):
    def fire(x, w, b, hist):
        return cupy_ops.causal_conv_fire(x, w, b, 2, surrogate.ATan(), hist)

    results = {}
    for mode in ("atomics", "set_deterministic", "torch"):
        cpu_glue.clear()
        previous = torch.are_deterministic_algorithms_enabled()
        try:
            cupy_ops.set_deterministic(mode == "set_deterministic")
            torch.use_deterministic_algorithms(mode == "torch")
            results[mode] = _deterministic_grads(fire)
        finally:
            torch.use_deterministic_algorithms(previous)
            cupy_ops.set_deterministic(False)
        (info,) = cpu_glue.of("backward")
        assert info["deterministic"] == (mode != "atomics"), mode
    for mode in ("set_deterministic", "torch"):
        for got, want in zip(results[mode], results["atomics"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(results["torch"], results["set_deterministic"]))


# ---------------------------------------------------------------- statistics


def _fold_run(conv_fire, conv_stats, x, w, gamma, beta, d, hist, grad_s, use=("mean", "var")):
    """A small MFPSN-like training step: fold the batch statistics into weight and bias."""
    xl, wl, gl, bl = _leaves(x, w, gamma, beta)
    mean, var = conv_stats(xl, wl, d, hist)
    scale = gl * torch.rsqrt(var + 1e-5)
    s = conv_fire(xl, wl * scale[:, None], bl - mean * scale, d, surrogate.Sigmoid(alpha=3.0), hist)
    loss = (s.float() * grad_s.float()).sum()
    if "mean" in use:
        loss = loss + (mean * torch.linspace(-1, 1, mean.numel())).sum()
    if "var" in use:
        loss = loss + var.sum() * 0.5
    loss.backward()
    return (mean, var, s), (xl.grad, wl.grad, gl.grad, bl.grad)


@pytest.mark.parametrize(
    "case,dtype,use",
    [
        ("per-channel", torch.float32, ("mean", "var")),
        ("dilation-3-history", torch.float32, ("mean", "var")),
        ("T-less-than-k", torch.bfloat16, ("mean", "var")),
        ("T-1-history", torch.float16, ("mean",)),
        ("per-channel", torch.float32, ("var",)),
        ("per-channel", torch.float32, ()),
    ],
    ids=str,
)
def test_conv_channel_stats_gradient_through_a_fold(cpu_glue, case, dtype, use):
    spec = CONV_CASES[case]
    C, d = spec[2], spec[5]
    x, w, _, hist, grad_s = _conv_inputs(spec, dtype, seed=11)
    g = _gen(12)
    gamma, beta = 1 + 0.3 * torch.randn(C, generator=g), torch.randn(C, generator=g) * 0.2
    args = (x, w, gamma, beta, d, hist, grad_s, use)
    (mean, var, s), grads = _fold_run(cupy_ops.causal_conv_fire, cupy_ops.conv_channel_stats, *args)
    (rmean, rvar, rs), rgrads = _fold_run(
        reference.causal_conv_fire, reference.conv_channel_stats, *args
    )
    assert mean.dtype == var.dtype == torch.float32
    torch.testing.assert_close(mean, rmean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, rvar, rtol=1e-4, atol=1e-5)
    # the folded weights differ in the last bit, so a spike may flip right at the threshold
    assert (s != rs).float().mean() < 0.01
    tol = _tol(dtype) if dtype != torch.float32 else {"rtol": 1e-3, "atol": 1e-4}
    for got, want in zip(grads, rgrads):
        _close(got, want, **tol)
    stats_calls = [c for c in cpu_glue.of("backward") if c["mode"] == _source.MODE_STATS]
    assert len(stats_calls) == 1


def test_conv_channel_stats_with_a_shared_weight():
    x, w, _, hist, _ = _conv_inputs(CONV_CASES["shared-weight-and-bias"], torch.float32, 4)
    results = []
    for fn in (cupy_ops.conv_channel_stats, reference.conv_channel_stats):
        xl, wl = _leaves(x, w)
        mean, var = fn(xl, wl, 1, hist)
        (mean.square().sum() + (var * torch.arange(var.numel())).sum()).backward()
        results.append((mean, var, xl.grad, wl.grad))
    for got, want in zip(*results):
        _close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- dense


def _dense_inputs(t_out, t_in, m, dtype, seed):
    g = _gen(seed)
    x = torch.randn(t_in, m, generator=g).to(dtype)
    w = (torch.randn(t_out, t_in, generator=g) / math.sqrt(t_in)).to(dtype)
    b = (torch.randn(t_out, 1, generator=g) * 0.2).to(dtype)
    grad_s = torch.randn(t_out, m, generator=g).to(dtype)
    return x, w, b, grad_s


def _dense_run(fn, x, w, b, sg_fn, grad_s):
    xl, wl, bl = _leaves(x, w, b)
    s = fn(xl, wl, bl, sg_fn)
    s.backward(grad_s)
    return s, xl.grad, wl.grad, bl.grad


def _margin(x, w, b, dtype) -> torch.Tensor:
    """Where the charge is far enough from 0 that rounding cannot flip the spike."""
    exact = torch.addmm(b.double(), w.double(), x.double())
    return exact.abs() > (1e-4 if dtype == torch.float32 else 3e-2)


@pytest.mark.parametrize("shape", [(6, 6, 40), (3, 7, 33), (7, 3, 5), (1, 1, 9)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sg_fn", SURROGATES, ids=repr)
def test_dense_fire_matches_reference(cpu_glue, shape, dtype, sg_fn):
    x, w, b, grad_s = _dense_inputs(*shape, dtype, seed=sum(shape))
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, x, w, b, sg_fn, grad_s)
    assert s.dtype == dtype and s.shape == (shape[0], shape[2])
    margin = _margin(x, w, b, dtype)
    rs = reference.dense_fire(x, w, b, sg_fn)
    assert torch.equal(s[margin], rs[margin])
    # gradients: the reference in fp32 from the same (rounded) inputs, as the kernels compute
    _, rgx, rgw, rgb = _dense_run(reference.dense_fire, x.float(), w.float(), b.float(), sg_fn,
                                  grad_s.float())  # fmt: skip
    tol = _tol(dtype)
    _close(gx, rgx.to(dtype), **tol)
    _close(gw, rgw.to(dtype), **tol)
    _close(gb, rgb.to(dtype), **tol)
    (info,) = cpu_glue.of("dense_backward")
    assert (info["sg"], info["params"]) == surrogates.encode(sg_fn, "cupy")


def test_dense_fire_sliced_weight_and_bias():
    """MaskedPSN's chunks pass non-contiguous row/column slices of the weight and bias."""
    x, w, b, grad_s = _dense_inputs(8, 8, 12, torch.float32, 6)
    xs, ws, bs, gs = x[2:7].contiguous(), w[3:6, 2:7], b[3:6], grad_s[3:6]
    assert not ws.is_contiguous()
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, xs, ws, bs, surrogate.ATan(), gs)
    rs, rgx, rgw, rgb = _dense_run(reference.dense_fire, xs, ws, bs, surrogate.ATan(), gs)
    margin = _margin(xs, ws, bs, torch.float32)
    assert torch.equal(s[margin], rs[margin])
    for got, want in ((gx, rgx), (gw, rgw), (gb, rgb)):
        _close(got, want, rtol=1e-4, atol=1e-5)


def test_dense_fire_non_contiguous_input():
    x, w, b, grad_s = _dense_inputs(4, 4, 10, torch.float16, 7)
    xt = x.t().contiguous().t()  # the same values, column-major
    assert not xt.is_contiguous()
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, xt, w, b, surrogate.ATan(), grad_s)
    want = _dense_run(cupy_ops.dense_fire, x, w, b, surrogate.ATan(), grad_s)
    for got, ref in zip((s, gx, gw, gb), want):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("loss", ["sum", "transposed"])
def test_non_contiguous_upstream_gradients(loss):
    """``s.sum()`` sends an expanded gradient, a transposed use a strided one: the backward
    ops read grad_s as a raw pointer, so it must be made contiguous first."""

    def backward(s, g):
        if loss == "sum":
            (s.sum() * 0.5).backward()
        else:
            (s.transpose(0, -1) * g.transpose(0, -1)).sum().backward()

    x, w, b, hist, grad_s = _conv_inputs(CONV_CASES["dilation-3-history"], torch.bfloat16, 13)
    conv = []
    for fn in (cupy_ops.causal_conv_fire, reference.causal_conv_fire):
        xl, wl, bl = _leaves(x, w, b)
        backward(fn(xl, wl, bl, 3, surrogate.ATan(), hist), grad_s)
        conv.append((xl.grad, wl.grad, bl.grad))
    (gx, gw, gb), (rgx, rgw, rgb) = conv
    _close(gx, rgx, **_tol(torch.bfloat16))
    _close(gw, rgw, rtol=1e-4, atol=1e-4)
    _close(gb, rgb, rtol=1e-4, atol=1e-4)
    x, w, b, grad_s = _dense_inputs(5, 5, 12, torch.float32, 14)
    dense = []
    for fn in (cupy_ops.dense_fire, reference.dense_fire):
        xl, wl, bl = _leaves(x, w, b)
        backward(fn(xl, wl, bl, surrogate.Sigmoid()), grad_s)
        dense.append((xl.grad, wl.grad, bl.grad))
    for got, want in zip(*dense):
        _close(got, want, rtol=1e-4, atol=1e-5)


class _CudaAutocast(types.ModuleType):
    """``torch`` as the cupy wrapper sees it inside ``torch.autocast("cuda", bfloat16)``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def is_autocast_enabled(device_type=None):
        return device_type == "cuda" or torch.is_autocast_enabled(device_type)

    @staticmethod
    def get_autocast_dtype(device_type):
        return torch.bfloat16 if device_type == "cuda" else torch.get_autocast_dtype(device_type)


def test_dense_fire_under_cuda_autocast(cpu_glue, monkeypatch):
    """x is cast to the autocast dtype (spikes in bf16, as addmm gives), fp32 weights stay
    fp32, and gradients come back in each input's dtype."""
    monkeypatch.setattr(cupy_ops, "torch", _CudaAutocast())
    x, w, b, grad_s = _dense_inputs(5, 5, 24, torch.float32, 8)
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, x, w, b, surrogate.ATan(), grad_s)
    (info,) = cpu_glue.of("dense")
    assert info["dtype"] == torch.bfloat16 and info["weight_dtype"] == torch.float32
    assert s.dtype == torch.bfloat16
    assert gx.dtype == gw.dtype == gb.dtype == torch.float32
    xb = x.to(torch.bfloat16).float()
    margin = _margin(xb, w, b, torch.bfloat16)
    rs, rgx, rgw, rgb = _dense_run(reference.dense_fire, xb, w, b, surrogate.ATan(),
                                   grad_s.to(torch.bfloat16).float())  # fmt: skip
    assert torch.equal(s.float()[margin], rs[margin])
    tol = _tol(torch.bfloat16)
    _close(gx, rgx, **tol)
    _close(gw, rgw, **tol)
    _close(gb, rgb, **tol)


# ---------------------------------------------------------------- custom-op registrations


def test_opcheck_schema_fake_and_autograd_registration():
    x, w, b, hist, grad_s = _conv_inputs(CONV_CASES["dilation-3-history"], torch.float32, 9)
    xl, wl, bl = _leaves(x, w, b)
    sg, (p0, p1, p2) = surrogates.encode(surrogate.ATan(), "cupy")
    mean = x.new_zeros(x.shape[2])
    xd, wd, bd, gd = _leaves(*_dense_inputs(4, 3, 7, torch.float32, 10))
    cases = [
        (_ops.causal_conv_fire, (xl, wl, bl, hist, 3, False, sg, p0, p1, p2, True)),
        (_ops.causal_conv_backward, (grad_s, x, w, b, None, None, hist, 3, _source.MODE_FIRE,
                                     sg, p0, p1, p2, False)),
        (_ops.causal_conv_backward, (None, x, w, mean, mean + 0.1, mean + 0.2, hist, 3,
                                     _source.MODE_STATS, 0, 0.0, 0.0, 0.0, True)),
        (_ops.conv_channel_stats, (xl, wl, hist, 3, False)),
        (_ops.dense_fire, (xd, wd, bd, sg, p0, p1, p2)),
        (_ops.dense_backward, (gd.detach(), xd.detach(), wd.detach(), bd.detach(), sg, p0, p1,
                               p2)),
    ]  # fmt: skip
    for op, args in cases:
        torch.library.opcheck(
            op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
        )


def test_gpu_validation_kernel_cases_pass_on_the_emulated_kernels():
    """The cases compute-sanitizer runs on a GPU agree with the torch backend here first."""
    from spikingjelly_psn.ops.cupy import gpu_checks

    for case in gpu_checks.kernel_cases():
        gpu_checks.run_case(case, torch.device("cpu"))


# ---------------------------------------------------------------- the plugin neurons


def _twins(make, seed: int):
    torch.manual_seed(seed)
    net = make()
    twin = copy.deepcopy(net)
    twin.backend = "cupy"
    return net, twin


def _run_neuron(net, chunks, grad_seed: int):
    """Spikes of consecutive calls (one sequence), the loss's backward, gradients by name."""
    functional.reset_net(net)
    leaves = _leaves(*chunks)
    spikes = [net(x) for x in leaves]
    g = _gen(grad_seed)
    sum((s * torch.randn(s.shape, generator=g).to(s.dtype)).sum() for s in spikes).backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    return spikes, [x.grad for x in leaves], grads


def _compare_neurons(net, twin, chunks, tol=None, flips=0.0):
    tol = tol or {"rtol": 1e-4, "atol": 1e-5}
    spikes, x_grads, grads = _run_neuron(net, chunks, 1)
    c_spikes, c_x_grads, c_grads = _run_neuron(twin, chunks, 1)
    for got, want in zip(c_spikes, spikes):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert (got != want).float().mean() <= flips
    assert 0 < torch.cat([s.flatten() for s in spikes]).float().mean() < 1
    for got, want in zip(c_x_grads, x_grads):
        _close(got, want, **tol)
    assert grads.keys() == c_grads.keys()
    for name, want in grads.items():
        assert want is not None and c_grads[name] is not None, name
        _close(c_grads[name], want, **tol)
    for got, want in zip(twin.buffers(), net.buffers()):
        _close(got, want, rtol=1e-5, atol=1e-6)


def test_psn_cupy_equals_torch(cpu_glue):
    net, twin = _twins(lambda: PSN(T=6, surrogate_function=surrogate.Sigmoid(alpha=3.0)), 0)
    x = torch.randn(6, 4, 5, generator=_gen(1)) * 2
    _compare_neurons(net, twin, [x])
    assert cpu_glue.of("dense") and cpu_glue.of("dense_backward")


@pytest.mark.parametrize("lambda_,chunks", [(0.5, (6,)), (1.0, (6,)), (1.0, (2, 1, 3))], ids=str)
def test_masked_psn_cupy_equals_torch(cpu_glue, lambda_, chunks):
    net, twin = _twins(
        lambda: MaskedPSN(k=3, T=6, lambda_init=lambda_, step_mode="m", streaming=True), 2
    )
    x = torch.randn(6, 3, 4, generator=_gen(3)) * 2
    _compare_neurons(net, twin, list(x.split(list(chunks))))
    assert len(cpu_glue.of("dense")) == len(chunks)


@pytest.mark.parametrize("exp_init", [True, False])
def test_sliding_psn_cupy_equals_torch(cpu_glue, exp_init):
    net, twin = _twins(
        lambda: SlidingPSN(
            k=3,
            exp_init=exp_init,
            surrogate_function=surrogate.PiecewiseQuadratic(),
            step_mode="m",
            streaming=True,
        ),
        4,
    )
    x = torch.randn(9, 2, 5, generator=_gen(5)) * 2
    _compare_neurons(net, twin, list(x.split([4, 1, 4])))
    assert len(cpu_glue.of("fire")) == 3


MFPSN_CASES = {
    # name: (constructor kwargs, train, chunks, input dtype)
    "bn-train": ({"threshold": "bn"}, True, (8,), torch.float32),
    "bn-train-float-weights-dilation": ({"dilation": 2, "quantize": False}, True, (8,),
                                        torch.float32),
    "bn-train-bf16-input": ({"threshold": "bn"}, True, (8,), torch.bfloat16),
    "bn-train-chunks": ({"dilation": 2}, True, (6, 2), torch.float32),
    "bn-eval-chunks": ({"dilation": 2}, False, (3, 5), torch.float32),
    "learnable-train-chunks": ({"threshold": "learnable"}, True, (5, 3), torch.float32),
    "learnable-eval": ({"threshold": "learnable", "quantize": False}, False, (8,), torch.float32),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MFPSN_CASES), ids=str)
def test_mfpsn_cupy_equals_torch(cpu_glue, case):
    kwargs, train, chunks, dtype = MFPSN_CASES[case]

    def make():
        net = MFPSN(k=3, channels=4, step_mode="m", streaming=True, **kwargs)
        with torch.no_grad():
            if net.threshold == "bn":
                net.gamma.uniform_(0.5, 1.5)
                net.beta.uniform_(-1.0, 0.0)
                net.running_mean.uniform_(-0.5, 0.5)
                net.running_var.uniform_(0.5, 2.0)
            else:
                net.bias.uniform_(-1.0, 0.0)
        return net.train(train)

    net, twin = _twins(make, 6)
    x = (torch.randn(8, 2, 4, 3, 3, generator=_gen(7)) * 1.5).to(dtype)
    # bn folding: the folded weights are quantized; a last-bit difference in the statistics may
    # flip a spike right at the threshold or a weight right between two powers of two
    tol = _tol(dtype) if dtype != torch.float32 else {"rtol": 1e-3, "atol": 1e-4}
    _compare_neurons(net, twin, list(x.split(list(chunks))), tol=tol, flips=0.01)
    assert len(cpu_glue.of("fire")) == len(chunks)
    assert len(cpu_glue.of("stats")) == (len(chunks) if train and "bn" in case else 0)
