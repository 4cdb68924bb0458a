"""Host-side arithmetic around the kernels, in plain PyTorch (any device, no CuPy): which kernel
variant serves a call, launch shapes and shared memory, and the final reductions of the kernels'
per-block partial results.

The CPU tests run these same functions around the emulated kernels.
"""

from __future__ import annotations

import torch

from . import _source

SMEM_LIMIT = 48 * 1024  # dynamic shared memory available without an opt-in
MAX_BLOCK = 256
INT32_MAX = 2**31 - 1
# Surrogate ids that the register-window backward evaluates inline (psn_surrogate_common).
INLINE_SURROGATES = (0, 1)  # ATan, Sigmoid


def fwd_window(k: int) -> int:
    """Window size of the forward and statistics kernels for k taps (0: the generic kernel)."""
    return _source.window(k)


def bwd_window(k: int, mode: int, surrogate: int) -> int:
    """Window size of the backward kernel: the register window serves the statistics and the
    surrogates ATan and Sigmoid; the others run in the generic kernel."""
    if mode == _source.MODE_FIRE and surrogate not in INLINE_SURROGATES:
        return _source.GENERIC_K
    return _source.window(k)


def tap_row_floats(window: int) -> int:
    """Floats of shared memory per thread for the taps of a forward-walking kernel (psn_fwd_row)."""
    return window + 4 if window > 8 else 0


def block_size(columns: int) -> int:
    """Threads per block: a power of two from 32 to 256, no larger than the work needs."""
    block = 32
    while block < MAX_BLOCK and block < columns:
        block *= 2
    return block


def conv_tile(channels: int, positions: int) -> int:
    """blockDim.x of the conv backward and statistics kernels: channels side by side.

    1 (one channel per block, threads along the B·S columns) unless S is tiny: with S <= 2 the
    columns of one channel are S·C elements apart, so neighbouring channels (S elements apart)
    are the better warp, up to 32 of them.
    """
    if positions > 2:
        return 1
    tile = 1
    while tile < 32 and tile < channels:
        tile *= 2
    return tile


def conv_block(columns: int, channels: int, positions: int) -> tuple[int, int]:
    """(blockDim.x, blockDim.y) of the conv backward and statistics kernels: 32 to 256 threads,
    powers of two."""
    tile = conv_tile(channels, positions)
    return tile, block_size(columns * tile) // tile


def conv_grid(columns: int, channels: int, block: tuple[int, int]) -> tuple[int, int]:
    """Grid of the conv backward and statistics kernels: (column blocks, channel blocks)."""
    return -(-columns // block[1]), -(-channels // block[0])


def conv_fwd_smem(threads: int, window: int) -> int:
    """Dynamic shared memory (bytes) of the conv forward: the tap rows of a 16-tap window."""
    return threads * tap_row_floats(window) * 4


def conv_stats_smem(block: tuple[int, int], window: int) -> int:
    """Dynamic shared memory (bytes) of the conv statistics: (count, mean, M2) per thread, then
    the tap rows."""
    threads = block[0] * block[1]
    return threads * (3 + tap_row_floats(window)) * 4


def conv_bwd_smem(block: tuple[int, int], window: int) -> int:
    """Dynamic shared memory (bytes) of the conv backward: the g ring (2K floats per thread) and,
    for K = 16, a row of K+1 taps per channel of the block; the generic kernel, its reduction row."""
    threads = block[0] * block[1]
    if window == _source.GENERIC_K:
        return threads * 4
    rows = block[0] * (window + 1) if window > 8 else 0
    return (2 * window * threads + rows) * 4


def dense_smem(t_out: int, window: int) -> int:
    """Dynamic shared memory (bytes) of the dense kernels: W as T_out rows of the window."""
    return t_out * window * 4


def reduce_partials(partial: torch.Tensor) -> torch.Tensor:
    """[C, blocks, k+1] per-block sums -> [C, k+1], in a fixed order (deterministic mode)."""
    return partial.sum(dim=1)


def split_weight_bias_grad(
    gwb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel [C, k+1] sums -> grad of ``weight`` ([C, k] or shared [1, k]) and of ``bias``."""
    k = weight.shape[1]
    grad_w = gwb[:, :k]
    if weight.shape[0] != gwb.shape[0]:
        grad_w = grad_w.sum(dim=0, keepdim=True)
    grad_w = grad_w.to(weight.dtype)
    if bias is None:
        return grad_w, None
    grad_b = gwb[:, k]
    if bias.numel() != gwb.shape[0]:
        grad_b = grad_b.sum(dim=0, keepdim=True)
    return grad_w, grad_b.reshape(bias.shape).to(bias.dtype)


def combine_stats(partial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[C, blocks, 3] (count, mean, M2) per block -> per-channel mean and biased variance
    (Chan et al.'s parallel combination, in a fixed order)."""
    count, mean, m2 = partial.unbind(dim=-1)
    total = count.sum(dim=1)
    channel_mean = (count * mean).sum(dim=1) / total
    delta = mean - channel_mean.unsqueeze(1)
    var = (m2 + count * delta * delta).sum(dim=1) / total
    return channel_mean, var


def stats_grad_coefficients(
    grad_mean: torch.Tensor | None, grad_var: torch.Tensor | None, mean: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c1, c2) with dLoss/dH = c1 + c2 · (H − mean): c1 = grad_mean / n, c2 = 2 grad_var / n."""
    zeros = torch.zeros_like(mean)
    c1 = zeros if grad_mean is None else grad_mean.float() / count
    c2 = zeros if grad_var is None else grad_var.float() * (2.0 / count)
    return c1.contiguous(), c2.contiguous()
