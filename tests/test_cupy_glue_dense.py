"""The cupy backend's dense op (PSN, masked PSN), glue and gradients run on the CPU
(tests/cupy_support/cpu_glue.py), against the reference; non-contiguous gradients, CUDA autocast."""

from __future__ import annotations

import types

import pytest
import torch
from cupy_support.cpu_glue import DTYPES
from cupy_support.glue_inputs import (
    CONV_CASES,
    SURROGATES,
    close,
    conv_case_inputs,
    dense_inputs,
    leaves,
    tolerance,
)
from spikingjelly.activation_based import surrogate

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.ops import reference, surrogates

pytestmark = pytest.mark.usefixtures("cpu_glue")  # kernels emulated on the CPU (conftest.py)


def _dense_run(fn, x, w, b, sg_fn, grad_s):
    xl, wl, bl = leaves(x, w, b)
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
    x, w, b, grad_s = dense_inputs(*shape, dtype, seed=sum(shape))
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, x, w, b, sg_fn, grad_s)
    assert s.dtype == dtype and s.shape == (shape[0], shape[2])
    margin = _margin(x, w, b, dtype)
    rs = reference.dense_fire(x, w, b, sg_fn)
    assert torch.equal(s[margin], rs[margin])
    # gradients: the reference in fp32 from the same (rounded) inputs, as the kernels compute
    _, rgx, rgw, rgb = _dense_run(reference.dense_fire, x.float(), w.float(), b.float(), sg_fn,
                                  grad_s.float())  # fmt: skip
    tol = tolerance(dtype)
    close(gx, rgx.to(dtype), **tol)
    close(gw, rgw.to(dtype), **tol)
    close(gb, rgb.to(dtype), **tol)
    (info,) = cpu_glue.of("dense_backward")
    assert (info["sg"], info["params"]) == surrogates.encode(sg_fn, "cupy")


def test_dense_fire_sliced_weight_and_bias():
    """MaskedPSN's chunks pass non-contiguous row/column slices of the weight and bias."""
    x, w, b, grad_s = dense_inputs(8, 8, 12, torch.float32, 6)
    xs, ws, bs, gs = x[2:7].contiguous(), w[3:6, 2:7], b[3:6], grad_s[3:6]
    assert not ws.is_contiguous()
    s, gx, gw, gb = _dense_run(cupy_ops.dense_fire, xs, ws, bs, surrogate.ATan(), gs)
    rs, rgx, rgw, rgb = _dense_run(reference.dense_fire, xs, ws, bs, surrogate.ATan(), gs)
    margin = _margin(xs, ws, bs, torch.float32)
    assert torch.equal(s[margin], rs[margin])
    for got, want in ((gx, rgx), (gw, rgw), (gb, rgb)):
        close(got, want, rtol=1e-4, atol=1e-5)


def test_dense_fire_non_contiguous_input():
    x, w, b, grad_s = dense_inputs(4, 4, 10, torch.float16, 7)
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

    x, w, b, hist, grad_s = conv_case_inputs(CONV_CASES["dilation-3-history"], torch.bfloat16, 13)
    conv = []
    for fn in (cupy_ops.causal_conv_fire, reference.causal_conv_fire):
        xl, wl, bl = leaves(x, w, b)
        backward(fn(xl, wl, bl, 3, surrogate.ATan(), hist), grad_s)
        conv.append((xl.grad, wl.grad, bl.grad))
    (gx, gw, gb), (rgx, rgw, rgb) = conv
    close(gx, rgx, **tolerance(torch.bfloat16))
    close(gw, rgw, rtol=1e-4, atol=1e-4)
    close(gb, rgb, rtol=1e-4, atol=1e-4)
    x, w, b, grad_s = dense_inputs(5, 5, 12, torch.float32, 14)
    dense = []
    for fn in (cupy_ops.dense_fire, reference.dense_fire):
        xl, wl, bl = leaves(x, w, b)
        backward(fn(xl, wl, bl, surrogate.Sigmoid()), grad_s)
        dense.append((xl.grad, wl.grad, bl.grad))
    for got, want in zip(*dense):
        close(got, want, rtol=1e-4, atol=1e-5)


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
    x, w, b, grad_s = dense_inputs(5, 5, 24, torch.float32, 8)
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
    tol = tolerance(torch.bfloat16)
    close(gx, rgx, **tol)
    close(gw, rgw, **tol)
    close(gb, rgb, **tol)
