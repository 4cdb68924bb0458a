"""Causal convolution taps as banded Toeplitz matrices, and Toeplitz gradients back to taps.

A causal dilated convolution over time is a matrix product ``H = A @ X`` with
``A[i, j] = weight[m]`` where output step ``i`` lies ``(k-1-m)·dilation`` steps after input
step ``j``. Building ``A`` is a gather from a fixed index map, with no Python loop over taps,
so GEMMs do the work; its gradient is summed back to the taps along the same map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TapMap:
    """Where the taps sit in a ``[rows, cols]`` Toeplitz matrix: the flat positions of its
    nonzero entries and the tap at each. Entries elsewhere are zero."""

    rows: int
    cols: int
    k: int
    positions: torch.Tensor
    taps: torch.Tensor
    _one_hot: dict = field(default_factory=dict, compare=False, repr=False)

    def one_hot(self, dtype: torch.dtype) -> torch.Tensor:
        """``[entries, k]``: 1 where an entry holds a tap (sums an entry gradient to taps)."""
        if dtype not in self._one_hot:
            eye = torch.eye(self.k, dtype=dtype, device=self.positions.device)
            self._one_hot[dtype] = eye.index_select(0, self.taps)
        return self._one_hot[dtype]


_map_cache: dict[tuple, TapMap] = {}


def tap_map(
    k: int, dilation: int, rows: int, cols: int, offset: int, device: torch.device
) -> TapMap:
    """The taps of a ``[rows, cols]`` matrix whose row ``i`` is at time ``i`` and column ``j``
    at time ``j − offset``: the entry holds tap ``m`` where ``i + offset − j = (k−1−m)·dilation``.

    Maps are cached (a few per layer shape), except while ``torch.compile`` traces, which
    folds them into the graph itself.
    """
    if torch.compiler.is_compiling():
        return _tap_map(k, dilation, rows, cols, offset, device)
    key = (k, dilation, rows, cols, offset, device)
    found = _map_cache.get(key)
    if found is None:
        found = _map_cache[key] = _tap_map(k, dilation, rows, cols, offset, device)
    return found


def _tap_map(
    k: int, dilation: int, rows: int, cols: int, offset: int, device: torch.device
) -> TapMap:
    i = torch.arange(rows, device=device).unsqueeze(1)
    j = torch.arange(cols, device=device).unsqueeze(0)
    lag = i + offset - j
    tap = (k - 1) - torch.div(lag, dilation, rounding_mode="floor")
    valid = ((lag >= 0) & (lag % dilation == 0) & (tap >= 0)).flatten()
    positions = valid.nonzero().squeeze(1)
    return TapMap(rows, cols, k, positions, tap.flatten().index_select(0, positions))


def toeplitz(weight: torch.Tensor, taps: TapMap) -> torch.Tensor:
    """``[G, rows, cols]`` matrices of the taps ``weight [G, k]`` (differentiable in weight)."""
    zeros = weight.new_zeros(weight.shape[0], taps.rows * taps.cols)
    matrix = zeros.index_copy(1, taps.positions, weight.index_select(1, taps.taps))
    return matrix.view(weight.shape[0], taps.rows, taps.cols)


def taps_gradient(grad: torch.Tensor, taps: TapMap) -> torch.Tensor:
    """``[G, k]``: the gradient of the taps from the gradient ``[G, rows, cols]`` of ``toeplitz``."""
    entries = grad.reshape(grad.shape[0], -1).index_select(1, taps.positions)
    return entries @ taps.one_hot(grad.dtype)


#: Output steps per tile: a long sequence is cut into tiles so each GEMM's inner dimension is
#: ``tile + lag`` instead of T (the matrix is banded, so whole-T GEMMs mostly multiply zeros).
TILE = 16


class Taps:
    """The tiles of one call's convolution over ``T`` steps, with an optional history.

    One matrix ``A [G, tile, tile + lag]`` (``lag = (k−1)·dilation``) serves every tile: tile
    ``[r0, r1)`` is ``A[:, :n, :n + lag] @ x[r0 − lag : r1]``. The first tile reads no steps
    before 0: ``A[:, :n, lag:] @ x[:n]``, plus ``A[:, :min(lag, n), :lag] @ history``. Tiles are
    at least ``lag`` long, so only the first one reaches into the history.
    """

    def __init__(self, weight: torch.Tensor, dilation: int, T: int, dtype: torch.dtype):
        self.k, self.dilation = weight.shape[1], dilation
        self.lag = (self.k - 1) * dilation
        self._weight = weight.to(dtype)
        self.tile = max(TILE, self.lag) if T - self.lag > TILE else T
        self.map = tap_map(
            self.k, dilation, self.tile, self.tile + self.lag, self.lag, weight.device
        )
        self.a = toeplitz(self._weight, self.map)
        self.windows = [self._window(r, min(r + self.tile, T)) for r in range(0, T, self.tile)]
        self.history_rows = min(self.lag, T)

    def _window(self, r0: int, r1: int) -> tuple[slice, slice, slice]:
        """``(output rows, columns of A, input rows)`` of the tile ``[r0, r1)``."""
        n = r1 - r0
        if r0 == 0:
            return slice(0, n), slice(self.lag, self.lag + n), slice(0, n)
        return slice(r0, r1), slice(0, n + self.lag), slice(r0 - self.lag, r1)

    def full(self, T: int) -> torch.Tensor:
        """The untiled ``[G, T, T]`` matrix of the whole sequence (no history)."""
        return toeplitz(self._weight, tap_map(self.k, self.dilation, T, T, 0, self.a.device))

    def group(self, channels: slice) -> slice:
        """The rows of ``A`` for a channel range (one shared group serves every channel)."""
        return channels if self.a.shape[0] > 1 else slice(0, 1)

    def weight_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """``[G, k]`` tap gradient from the gradient of ``A``."""
        return taps_gradient(grad, self.map)
