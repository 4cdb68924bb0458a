"""What the cupy backend's autograd keeps for backward, measured on fake CUDA tensors (no GPU).

The custom ops' fake implementations stand in for the kernels; torch.autograd.graph's
saved_tensors_hooks count the bytes each op saves. Only x (plus history, the small weights and
per-channel vectors) may be saved: the charge H is recomputed in backward.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate
from torch._subclasses.fake_tensor import FakeTensorMode

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.ops import reference, surrogates
from spikingjelly_psn.ops.cupy import _launch, _ops


@pytest.fixture(autouse=True)
def _pretend_gpu(monkeypatch):
    """The availability checks look for CuPy and a GPU; fake tensors need neither."""
    monkeypatch.setattr(_launch, "require_cupy", lambda: None)
    monkeypatch.setattr(_launch, "require_gpu", lambda: None)


def _saved_bytes(fn) -> tuple[int, list[tuple[int, ...]]]:
    saved: list[torch.Tensor] = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    unique = {id(t): t for t in saved}.values()
    return sum(t.numel() * t.element_size() for t in unique), out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_causal_conv_fire_saves_x_history_and_weights_only(dtype):
    T, B, C, S, k, d = 16, 8, 32, 64, 4, 2
    with FakeTensorMode():
        x = torch.empty(T, B, C, S, device="cuda", dtype=dtype, requires_grad=True)
        hist = torch.empty((k - 1) * d, B, C, S, device="cuda", dtype=dtype)
        w = torch.empty(C, k, device="cuda", requires_grad=True)
        b = torch.empty(C, device="cuda", requires_grad=True)
        nbytes, s = _saved_bytes(
            lambda: cupy_ops.causal_conv_fire(x, w, b, d, surrogate.ATan(), hist, True)
        )
        expected = x.nbytes + hist.nbytes + w.nbytes + b.nbytes
        assert nbytes == expected
        assert s.shape == x.shape and s.dtype == dtype


def test_conv_channel_stats_saves_x_weights_and_the_mean():
    T, B, C, S, k = 8, 4, 16, 49, 3
    with FakeTensorMode():
        x = torch.empty(T, B, C, S, device="cuda", requires_grad=True)
        w = torch.empty(C, k, device="cuda", requires_grad=True)
        nbytes, (mean, var) = _saved_bytes(lambda: cupy_ops.conv_channel_stats(x, w, 1))
        assert nbytes == x.nbytes + w.nbytes + mean.nbytes
        assert mean.shape == var.shape == (C,)


def test_dense_fire_saves_x_and_weights_only():
    T, M = 16, 4096
    with FakeTensorMode():
        x = torch.empty(T, M, device="cuda", dtype=torch.float16, requires_grad=True)
        w = torch.empty(T, T, device="cuda", requires_grad=True)
        b = torch.empty(T, 1, device="cuda", requires_grad=True)
        nbytes, s = _saved_bytes(lambda: cupy_ops.dense_fire(x, w, b, surrogate.Sigmoid()))
        assert nbytes == x.nbytes + w.nbytes + b.nbytes
        assert s.shape == (T, M) and s.dtype == x.dtype


def test_reference_saves_more_than_the_cupy_backend():
    """The torch backend keeps the charge (and more) per layer; the kernels keep x alone."""
    T, B, C, S, k = 8, 2, 4, 16, 3
    x = torch.randn(T, B, C, S, requires_grad=True)
    w = torch.randn(C, k, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    ref_bytes, _ = _saved_bytes(lambda: reference.causal_conv_fire(x, w, b, 1, surrogate.ATan()))
    assert ref_bytes >= 2 * x.nbytes
    with FakeTensorMode():
        xf = torch.empty(T, B, C, S, device="cuda", requires_grad=True)
        wf = torch.empty(C, k, device="cuda", requires_grad=True)
        bf = torch.empty(C, device="cuda", requires_grad=True)
        ours, _ = _saved_bytes(lambda: cupy_ops.causal_conv_fire(xf, wf, bf, 1, surrogate.ATan()))
    assert ours == x.nbytes + w.nbytes + b.nbytes < ref_bytes


def test_backward_formulas_give_gradients_of_the_right_shapes():
    """The autograd formulas run end to end on meta tensors (the engine needs no GPU for them)."""
    sg, params = surrogates.encode(surrogate.ATan(), "cupy")

    def meta(*shape, dtype=torch.float32):
        return torch.empty(*shape, device="meta", dtype=dtype, requires_grad=True)

    x, w, b = meta(5, 2, 3, 7, dtype=torch.bfloat16), meta(1, 4), meta(3)
    hist = torch.empty(3, 2, 3, 7, device="meta", dtype=torch.bfloat16)
    _ops.causal_conv_fire(x, w, b, hist, 1, False, sg, *params, False).sum().backward()
    assert x.grad.shape == x.shape and x.grad.dtype == x.dtype
    assert w.grad.shape == w.shape and b.grad.shape == b.shape
    x, w = meta(5, 2, 3, 7), meta(3, 2)
    mean, var = _ops.conv_channel_stats(x, w, None, 2, True)
    (mean.sum() + var.sum()).backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    x, w, b = meta(4, 9, dtype=torch.float16), meta(6, 4), meta(6, 1)
    _ops.dense_fire(x, w, b, sg, *params).float().sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == b.shape


def test_the_fakes_check_the_shapes_the_kernels_read():
    """Under fake tensors (torch.compile's tracing) a wrong shape fails as the kernels would
    misread it: the fakes check what the launcher takes for granted."""
    sg, params = surrogates.encode(surrogate.ATan(), "cupy")
    with FakeTensorMode():
        x = torch.empty(4, 2, 3, 5, device="cuda")
        w, b = torch.empty(3, 2, device="cuda"), torch.empty(3, device="cuda")
        hist = torch.empty(2, 2, 3, 5, device="cuda")
        assert _ops.causal_conv_fire(x, w, b, hist, 2, False, sg, *params, False).shape == x.shape
        with pytest.raises(RuntimeError, match="weight must be"):
            _ops.causal_conv_fire(x, w[:2], b, None, 1, False, sg, *params, False)
        with pytest.raises(RuntimeError, match="history has shape"):
            _ops.conv_channel_stats(x, w, hist, 1, False)
        xd, wd = torch.empty(4, 7, device="cuda"), torch.empty(3, 4, device="cuda")
        assert _ops.dense_fire(xd, wd, torch.empty(3, 1, device="cuda"), sg, *params).shape == (
            3,
            7,
        )
        with pytest.raises(RuntimeError, match="weight"):
            _ops.dense_fire(xd, wd.T, torch.empty(4, 1, device="cuda"), sg, *params)
