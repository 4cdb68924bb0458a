"""Host-side arithmetic around the kernels, in plain PyTorch (any device, no CuPy): tap codes,
launch shapes and the final reductions of the kernels' per-block partial results.

The CPU tests run these same functions around the emulated kernels.
"""

from __future__ import annotations

import torch

SMEM_LIMIT = 48 * 1024  # dynamic shared memory available without an opt-in
MAX_BLOCK = 256
INT32_MAX = 2**31 - 1


def pow2_codes(weight: torch.Tensor) -> torch.Tensor:
    """Each tap of a power-of-two weight (0 or ±2^e) as an int32: bit 0 sign, bit 1 non-zero,
    bits 2.. the exponent e (what ``psn_apply_tap`` decodes)."""
    weight = weight.float()
    _, exponent = torch.frexp(weight)  # weight = m · 2^exponent with |m| = 1/2
    sign = torch.signbit(weight).to(torch.int32)
    nonzero = weight != 0
    return torch.where(nonzero, (exponent - 1) * 4 + 2 + sign, sign).to(torch.int32).contiguous()


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
    """(blockDim.x, blockDim.y) of the conv statistics kernel (and of the backward before its
    shared-memory limit): 32 to 256 threads, powers of two."""
    tile = conv_tile(channels, positions)
    return tile, block_size(columns * tile) // tile


def conv_grid(columns: int, channels: int, block: tuple[int, int]) -> tuple[int, int]:
    """Grid of the conv backward and statistics kernels: (column blocks, channel blocks)."""
    return -(-columns // block[1]), -(-channels // block[0])


def conv_bwd_config(
    n_t: int, columns: int, channels: int, positions: int
) -> tuple[tuple[int, int], int, bool]:
    """(block, dynamic shared bytes, use a global scratch for g) of the conv backward.

    g [n_t, threads] plus the reduction row stay in shared memory while that fits the 48 KiB
    available without an opt-in (the block shrinks down to 32 threads for it: n_t <= 383);
    past that g goes to a global scratch and the block keeps its full size.
    """
    tile, rows = conv_block(columns, channels, positions)

    def smem(threads: int) -> int:
        return (n_t + 1) * threads * 4

    fitted = rows
    while tile * fitted > 32 and smem(tile * fitted) > SMEM_LIMIT:
        fitted //= 2
    if smem(tile * fitted) <= SMEM_LIMIT:
        return (tile, fitted), smem(tile * fitted), False
    return (tile, rows), tile * rows * 4, True


def needs_64bit(*extents: int) -> bool:
    """Whether an offset into a tensor of any of these sizes can exceed int32."""
    return max(extents) > INT32_MAX


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
