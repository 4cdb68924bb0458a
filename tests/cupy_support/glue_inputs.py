"""Inputs, cases and comparisons of the glue tests (test_cupy_glue_*.py)."""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import surrogate

from .inputs import conv_inputs, generator

SURROGATES = [surrogate.ATan(), surrogate.Sigmoid(alpha=2.5), surrogate.PiecewiseQuadratic(1.5)]


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def tolerance(dtype: torch.dtype) -> dict:
    return {
        torch.float32: {"rtol": 1e-4, "atol": 1e-5},
        torch.float16: {"rtol": 2e-3, "atol": 2e-3},
        torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
    }[dtype]


def close(got: torch.Tensor, want: torch.Tensor, **tol) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got, want)
    torch.testing.assert_close(got.float(), want.float(), **tol)


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


def conv_case_inputs(case, dtype, seed, weight_dtype=torch.float32):
    """The inputs of one CONV_CASES entry and an upstream gradient."""
    T, B, C, S, k, d, rows, bias_shape, with_history, pow2 = case
    g = generator(seed)
    x, w, b, hist = conv_inputs(g, (T, B, C, S), k, d, dtype, weight_rows=C if rows == "C" else 1,
                                bias_rows=C if bias_shape == "C" else 1, history=with_history,
                                pow2=pow2, zero_fraction=0.2, weight_scale=0.8)  # fmt: skip
    grad_s = torch.randn(T, B, C, S, generator=g).to(dtype)
    return x, w.to(weight_dtype), b.reshape(()) if bias_shape == "0-d" else b, hist, grad_s


def dense_inputs(t_out, t_in, m, dtype, seed):
    g = generator(seed)
    x = torch.randn(t_in, m, generator=g).to(dtype)
    w = (torch.randn(t_out, t_in, generator=g) / math.sqrt(t_in)).to(dtype)
    b = (torch.randn(t_out, 1, generator=g) * 0.2).to(dtype)
    grad_s = torch.randn(t_out, m, generator=g).to(dtype)
    return x, w, b, grad_s
