"""The kernels' arguments, described once: one structure per kernel, fields named and ordered as
the kernel's parameters in ``causal_conv.cu`` / ``dense.cu``.

The launcher builds them from tensors and passes :meth:`KernelArgs.kernel_values`; the CPU
emulation of the tests builds the same structures. Per-channel vectors and weights become fp32
and contiguous here. Field types say how a value reaches the kernel: ``Tensor`` a pointer (0 for
None), ``int`` an int32, ``Index`` a ``psn_index`` (int64), ``float`` an fp32.

The names the kernels use:

- ``n_t`` time-steps; ``C`` channels; ``S`` positions per channel; ``k`` taps; ``d`` dilation;
  ``N = B·C·S`` and ``R = B·S`` columns (``B`` the batch); ``t_in``, ``t_out``, ``M`` the dense
  op's ``[T_out, T_in] @ [T_in, M]``.
- ``w_stride``, ``b_stride``: elements between two channels' weight rows and bias entries, 0 when
  one row (or one bias) is shared by every channel.
- ``sg`` the surrogate's id and ``p0..p2`` its fp32 constants (:mod:`spikingjelly_psn.ops.surrogates`).
- ``c0, c1, c2``, the per-channel coefficients of the conv backward: fire mode, ``c0`` the bias
  (``g = grad_s · surrogate'(H + c0)``); statistics mode, ``c0`` the mean, ``c1 = grad_mean / n``,
  ``c2 = 2 grad_var / n`` (``g = c1 + c2 · (H − c0)``).
- ``gwb`` the ``[C, k+1]`` weight and bias gradient sums (atomics); ``partial`` the per-block
  rows of the deterministic sums (or of the statistics); ``scratch`` g of the generic kernels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from torch import Tensor

Index = int  # a psn_index (int64) in the kernels

_CONVERT = {
    "Tensor": lambda t: np.uint64(t.data_ptr()),
    "Tensor | None": lambda t: np.uint64(0 if t is None else t.data_ptr()),
    "int": np.int32,
    "Index": np.int64,
    "float": np.float32,
}


def channel_stride(rows: int, row_length: int, channels: int) -> int:
    """Elements between two channels' rows of a per-channel array: 0 when one row is shared."""
    return row_length if rows != 1 or channels == 1 else 0


def _fp32(t: Tensor) -> Tensor:
    return t.float().contiguous()


@dataclass(frozen=True)
class KernelArgs:
    """The arguments of one kernel launch, in the kernel's order."""

    def kernel_values(self) -> tuple:
        """The values CuPy passes: pointers, int32, int64 and fp32 scalars in the kernel's order."""
        return tuple(_CONVERT[f.type](getattr(self, f.name)) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class ConvFireFwd(KernelArgs):
    """``psn_conv_fire_fwd``: one thread per column of ``N``."""

    x: Tensor
    hist: Tensor | None
    out: Tensor
    weight: Tensor
    bias: Tensor
    n_t: int
    C: int
    S: Index
    N: Index
    k: int
    d: int
    w_stride: int
    b_stride: int


@dataclass(frozen=True)
class ConvBwd(KernelArgs):
    """``psn_conv_bwd``: the fire or statistics backward (see the module notes for c0..c2)."""

    grad_s: Tensor | None
    x: Tensor
    hist: Tensor | None
    grad_x: Tensor
    weight: Tensor
    c0: Tensor
    c1: Tensor | None
    c2: Tensor | None
    sg: int
    p0: float
    p1: float
    p2: float
    gwb: Tensor | None
    partial: Tensor | None
    scratch: Tensor | None
    n_t: int
    C: int
    S: Index
    R: Index
    k: int
    d: int
    w_stride: int
    b_stride: int


@dataclass(frozen=True)
class ConvStatsFwd(KernelArgs):
    """``psn_conv_stats_fwd``: per-block count, mean and M2 rows of each channel's charge."""

    x: Tensor
    hist: Tensor | None
    weight: Tensor
    partial: Tensor
    n_t: int
    C: int
    S: Index
    R: Index
    k: int
    d: int
    w_stride: int


@dataclass(frozen=True)
class DenseFireFwd(KernelArgs):
    """``psn_dense_fire_fwd``: one thread per column of ``M``."""

    x: Tensor
    out: Tensor
    weight: Tensor
    bias: Tensor
    t_in: int
    t_out: int
    M: Index


@dataclass(frozen=True)
class DenseFireBwd(KernelArgs):
    """``psn_dense_fire_bwd``: grad_x and g = dLoss/dH (fp32, for the weight-gradient GEMM)."""

    grad_s: Tensor
    x: Tensor
    weight: Tensor
    bias: Tensor
    sg: int
    p0: float
    p1: float
    p2: float
    g: Tensor
    grad_x: Tensor
    t_in: int
    t_out: int
    M: Index


def conv_fire_fwd(
    x: Tensor, hist: Tensor | None, out: Tensor, weight: Tensor, bias: Tensor, dilation: int
) -> ConvFireFwd:
    n_t, batch, channels, positions = x.shape
    w, b = _fp32(weight), _fp32(bias.reshape(-1))
    k = w.shape[1]
    return ConvFireFwd(
        x, hist, out, w, b, n_t, channels, positions, batch * positions * channels, k, dilation,
        channel_stride(w.shape[0], k, channels), channel_stride(b.numel(), 1, channels),
    )  # fmt: skip


def conv_bwd(
    grad_s: Tensor | None,
    x: Tensor,
    hist: Tensor | None,
    grad_x: Tensor,
    weight: Tensor,
    coefficients: tuple[Tensor, Tensor | None, Tensor | None],
    surrogate: tuple[int, tuple[float, float, float]],
    sums: tuple[Tensor | None, Tensor | None, Tensor | None],
    dilation: int,
) -> ConvBwd:
    """``coefficients`` = (c0, c1, c2), ``surrogate`` = (sg, (p0, p1, p2)), ``sums`` = (gwb,
    partial, scratch)."""
    n_t, batch, channels, positions = x.shape
    w, c0 = _fp32(weight), _fp32(coefficients[0].reshape(-1))
    k = w.shape[1]
    sg, (p0, p1, p2) = surrogate
    return ConvBwd(
        grad_s, x, hist, grad_x, w, c0, coefficients[1], coefficients[2], sg, p0, p1, p2, *sums,
        n_t, channels, positions, batch * positions, k, dilation,
        channel_stride(w.shape[0], k, channels), channel_stride(c0.numel(), 1, channels),
    )  # fmt: skip


def conv_stats_fwd(
    x: Tensor, hist: Tensor | None, weight: Tensor, partial: Tensor, dilation: int
) -> ConvStatsFwd:
    n_t, batch, channels, positions = x.shape
    w = _fp32(weight)
    k = w.shape[1]
    return ConvStatsFwd(
        x, hist, w, partial, n_t, channels, positions, batch * positions, k, dilation,
        channel_stride(w.shape[0], k, channels),
    )  # fmt: skip


def dense_fire_fwd(x: Tensor, out: Tensor, weight: Tensor, bias: Tensor) -> DenseFireFwd:
    w = _fp32(weight)
    return DenseFireFwd(x, out, w, _fp32(bias.reshape(-1)), x.shape[0], w.shape[0], x.shape[1])


def dense_fire_bwd(
    grad_s: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    surrogate: tuple[int, tuple[float, float, float]],
    g: Tensor,
    grad_x: Tensor,
) -> DenseFireBwd:
    w = _fp32(weight)
    sg, (p0, p1, p2) = surrogate
    return DenseFireBwd(
        grad_s, x, w, _fp32(bias.reshape(-1)), sg, p0, p1, p2, g, grad_x, x.shape[0],
        w.shape[0], x.shape[1],
    )  # fmt: skip
