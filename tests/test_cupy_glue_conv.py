"""The cupy backend's causal conv and its statistics, glue and gradients run on the CPU
(tests/cupy_support/cpu_glue.py), against the reference."""

from __future__ import annotations

import pytest
import torch
from cupy_support.cpu_glue import DTYPES
from cupy_support.glue_inputs import (
    CONV_CASES,
    SURROGATES,
    close,
    conv_case_inputs,
    leaves,
    tolerance,
)
from cupy_support.inputs import generator
from spikingjelly.activation_based import surrogate

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.ops import reference, surrogates
from spikingjelly_psn.ops.cupy import _source

pytestmark = pytest.mark.usefixtures("cpu_glue")  # kernels emulated on the CPU (conftest.py)


def _conv_run(fn, x, w, b, d, sg_fn, hist, pow2, grad_s):
    xl, wl, bl = leaves(x, w, b)
    s = fn(xl, wl, bl, d, sg_fn, hist, pow2)
    s.backward(grad_s)
    return s, xl.grad, wl.grad, bl.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_CASES), ids=str)
def test_causal_conv_fire_matches_reference(cpu_glue, case, dtype):
    spec = CONV_CASES[case]
    x, w, b, hist, grad_s = conv_case_inputs(spec, dtype, seed=len(case))
    d, pow2 = spec[5], spec[9]
    sg_fn = SURROGATES[len(case) % len(SURROGATES)]
    s, gx, gw, gb = _conv_run(cupy_ops.causal_conv_fire, x, w, b, d, sg_fn, hist, pow2, grad_s)
    rs, rgx, rgw, rgb = _conv_run(reference.causal_conv_fire, x, w, b, d, sg_fn, hist, pow2, grad_s)
    assert s.dtype == dtype and torch.equal(s, rs)
    assert 0 < s.float().mean() < 1
    close(gx, rgx, **tolerance(dtype))
    close(gw, rgw, rtol=1e-4, atol=1e-4)
    close(gb, rgb, rtol=1e-4, atol=1e-4)
    (fire,) = cpu_glue.of("fire")
    (bwd,) = cpu_glue.of("backward")
    sg_id, params = surrogates.encode(sg_fn, "cupy")
    assert fire["sg"] == bwd["sg"] == sg_id and bwd["params"] == params
    assert bwd["mode"] == _source.MODE_FIRE


@pytest.mark.parametrize("sg_fn", SURROGATES, ids=repr)
def test_conv_surrogates_and_low_precision_weights(sg_fn):
    """bf16 weights and input; the weight gradient comes back in the weight's dtype."""
    spec = CONV_CASES["per-channel"]
    x, w, b, hist, grad_s = conv_case_inputs(spec, torch.bfloat16, 3, weight_dtype=torch.bfloat16)
    b = b.to(torch.bfloat16)
    s, gx, gw, gb = _conv_run(cupy_ops.causal_conv_fire, x, w, b, 1, sg_fn, hist, False, grad_s)
    rs, rgx, rgw, rgb = _conv_run(
        reference.causal_conv_fire, x, w, b, 1, sg_fn, hist, False, grad_s
    )
    assert torch.equal(s, rs)
    tol = tolerance(torch.bfloat16)
    close(gx, rgx, **tol)
    close(gw, rgw, **tol)
    close(gb, rgb, **tol)


def test_conv_non_contiguous_input_and_history_in_another_dtype():
    """x a transposed view, history fp32 while x is fp16: the wrapper converts both."""
    T, B, C, S, k, d = 6, 2, 3, 4, 3, 2
    g = generator(5)
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
    close(gx, rgx, **tolerance(torch.float16))
    close(gw, rgw, rtol=1e-4, atol=1e-4)
    close(gb, rgb, rtol=1e-4, atol=1e-4)


def test_history_gets_no_gradient():
    x, w, b, hist, grad_s = conv_case_inputs(CONV_CASES["dilation-3-history"], torch.float32, 1)
    hist = hist.clone().requires_grad_(True)
    xl, wl, bl = leaves(x, w, b)
    cupy_ops.causal_conv_fire(xl, wl, bl, 3, surrogate.ATan(), hist).backward(grad_s)
    assert hist.grad is None and xl.grad is not None


def _deterministic_grads(fn):
    x, w, b, hist, grad_s = conv_case_inputs(
        CONV_CASES["shared-weight-channel-bias"], torch.float32, 2
    )
    xl, wl, bl = leaves(x, w, b)
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


def _fold_run(conv_fire, conv_stats, x, w, gamma, beta, d, hist, grad_s, use=("mean", "var")):
    """A small MFPSN-like training step: fold the batch statistics into weight and bias."""
    xl, wl, gl, bl = leaves(x, w, gamma, beta)
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
    x, w, _, hist, grad_s = conv_case_inputs(spec, dtype, seed=11)
    g = generator(12)
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
    tol = tolerance(dtype) if dtype != torch.float32 else {"rtol": 1e-3, "atol": 1e-4}
    for got, want in zip(grads, rgrads):
        close(got, want, **tol)
    stats_calls = [c for c in cpu_glue.of("backward") if c["mode"] == _source.MODE_STATS]
    assert len(stats_calls) == 1


def test_conv_channel_stats_with_a_shared_weight():
    x, w, _, hist, _ = conv_case_inputs(CONV_CASES["shared-weight-and-bias"], torch.float32, 4)
    results = []
    for fn in (cupy_ops.conv_channel_stats, reference.conv_channel_stats):
        xl, wl = leaves(x, w)
        mean, var = fn(xl, wl, 1, hist)
        (mean.square().sum() + (var * torch.arange(var.numel())).sum()).backward()
        results.append((mean, var, xl.grad, wl.grad))
    for got, want in zip(*results):
        close(got, want, rtol=1e-4, atol=1e-4)
