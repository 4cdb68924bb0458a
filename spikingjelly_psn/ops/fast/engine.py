"""The channel-wise causal convolution of one call, block by block and tile by tile.

Per block and time tile the charge is one batched GEMM with the tile's Toeplitz window, into a
contiguous tile buffer (PyTorch hands a batched GEMM to one MKL call only when its result is
contiguous; otherwise it loops over the batch). The caller finishes each tile in place (bias
and firing, or the charge's gradient), and the result is copied out. The backward recomputes
the charge tile by tile and runs two more GEMMs per tile: the input gradient, and the gradient
of the Toeplitz window, summed over blocks and folded to taps at the end. Nothing
``[T, N']``-sized is allocated besides the results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spikingjelly_psn.ops.fast.blocks import Block, Blocking
from spikingjelly_psn.ops.fast.toeplitz import Taps
from spikingjelly_psn.ops.reference import accumulation_dtype

#: ``finish(block, rows, charge)`` turns a tile's charge ``[channels, rows, columns]`` into the
#: tile's result (spikes, or the loss gradient by the charge), in place or not.
Finish = Callable[[Block, slice, torch.Tensor], torch.Tensor]


class BlockedConv:
    """``H[t] = Σ_i weight[:, i] · x[t − (k−1−i)·dilation]`` for ``x [T, B, C, S]`` and its history.

    Computed in fp32 (fp64 for fp64 inputs) whatever the input dtype.
    """

    def __init__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        history: torch.Tensor | None,
        dilation: int,
    ):
        self.dtype = accumulation_dtype(x, weight)
        self.x, self.history = x, history
        self.T = x.shape[0]
        self.blocking = Blocking(x.shape, self.dtype, x.device, self.T)
        self.taps = Taps(weight, dilation, self.T, self.dtype)
        self._x_buffer = self.blocking.scratch(x)
        self._history_buffer = None if history is None else self.blocking.scratch(history)
        self._tiles: torch.Tensor | None = None
        self._product: torch.Tensor | None = None

    def _tile_views(self, block: Block, buffer: torch.Tensor) -> list[torch.Tensor]:
        """One contiguous ``[channels, rows, columns]`` view of ``buffer`` per tile."""
        nc, n, start, views = block.channels, block.columns, 0, []
        for rows, _, _ in self.taps.windows:
            size = nc * (rows.stop - rows.start) * n
            views.append(buffer[start : start + size].view(nc, -1, n))
            start += size
        return views

    def _product_view(self, block: Block, rows: int) -> torch.Tensor:
        """A contiguous ``[channels, rows, columns]`` buffer for a GEMM result."""
        if self._product is None:
            # a tile (tiles are at least lag long), or a history's gradient
            rows_max = (
                self.taps.tile if self.history is None else max(self.taps.tile, self.taps.lag)
            )
            self._product = self.blocking.buffer(rows_max, self.x.device)
        return self._product[: block.channels * rows * block.columns].view(
            block.channels, rows, block.columns
        )

    def charge(self, block: Block) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """The block's charge, one contiguous tensor per tile, and the block's inputs."""
        x = self.blocking.operand(self.x, block, self._x_buffer)
        a = self.taps.a[self.taps.group(block.c)]
        if self._tiles is None:
            self._tiles = self.blocking.buffer(self.T, self.x.device)
        tiles = self._tile_views(block, self._tiles)
        for (rows, cols, inputs), h in zip(self.taps.windows, tiles):
            torch.bmm(a[:, : rows.stop - rows.start, cols], x[:, inputs], out=h)
        history = None
        if self.history is not None:
            history = self.blocking.operand(self.history, block, self._history_buffer)
            rows = self.taps.history_rows  # history reaches the first tile only
            tiles[0][:, :rows].baddbmm_(a[:, :rows, : self.taps.lag], history)
        return tiles, x, history

    def bias(self, bias: torch.Tensor, block: Block) -> torch.Tensor:
        """The block's bias as ``[channels, 1, 1]``."""
        return bias[self.taps.group(block.c)].view(-1, 1, 1)

    def forward(self, out: torch.Tensor, finish: Finish) -> torch.Tensor:
        """Fill ``out`` (shaped as x) with ``finish`` of each tile's charge."""
        for block in self.blocking:
            tiles, _, _ = self.charge(block)
            target = self.blocking.view(out, block)
            for (rows, _, _), h in zip(self.taps.windows, tiles):
                target[:, rows].copy_(Blocking.unflat(finish(block, rows, h), block))
        return out

    def stats(self, moments: bool = False) -> tuple[torch.Tensor, ...]:
        """Per-channel mean and biased variance of the charge (parallel variance formula).

        With ``moments``, also ``Σ H[t]·x[t − lag_i]`` and ``Σ x[t − lag_i]`` per channel and
        tap (``[C, k]`` each): the variance's weight gradient is a combination of the two.
        """
        parts: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, int]]] = {}
        sums: dict[tuple[int, int, int], torch.Tensor] = {}
        row_sums = self.taps.a.new_zeros(self.taps.a.shape[0], self.T) if moments else None
        for block in self.blocking:
            tiles, x, _ = self.charge(block)
            if moments:
                group = self.taps.group(block.c)
                self._weight_gradient(sums, group, tiles, x, None)
                row_sums[group] += x.sum(dim=2)
            count = self.T * block.columns
            mean = sum(h.sum(dim=(1, 2)) for h in tiles).div_(count)
            # squared deviations of the block, which is in cache (var_mean is slow on CPUs)
            var = sum(
                torch.linalg.vector_norm(h.sub_(mean.view(-1, 1, 1)), dim=(1, 2)).square_()
                for h in tiles
            ).div_(count)
            parts.setdefault((block.c.start, block.c.stop), []).append((mean, var, count))
        means, variances = [], []
        for key in sorted(parts):
            mean, var, count = zip(*parts[key])
            n = torch.tensor(count, dtype=self.dtype, device=self.x.device).unsqueeze(1)
            mean, var = torch.stack(mean), torch.stack(var)
            total = mean.mul(n).sum(0).div_(n.sum())
            means.append(total)
            variances.append((var + (mean - total).square()).mul_(n).sum(0).div_(n.sum()))
        if not moments:
            return torch.cat(means), torch.cat(variances)
        # Σ_t Σ x[t − lag_i] over t in [0, T): a prefix sum of the row sums
        prefix = torch.cat([row_sums.new_zeros(row_sums.shape[0], 1), row_sums.cumsum(1)], 1)
        lags = (self.taps.k - 1 - torch.arange(self.taps.k)) * self.taps.dilation
        shifted = prefix[:, (self.T - lags).clamp(min=0).to(prefix.device)]
        return torch.cat(means), torch.cat(variances), self._fold(sums), shifted

    def variance_input_gradient(
        self, scale: torch.Tensor, shift: torch.Tensor, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``Aᵀ(scale·H + shift)`` per channel, without H: ``(scale·AᵀA) x + shift·Aᵀ1``.

        ``AᵀA`` is banded (``lag`` either side), so each tile of rows reads ``tile + 2·lag``
        input rows. One GEMM pass instead of recomputing the charge and transposing it.
        With ``into`` (shaped as x), added to it in place instead of written to a new tensor.
        """
        T, lag = self.T, self.taps.lag
        a = self.taps.full(T)
        gram = torch.bmm(a.transpose(1, 2), a).mul_(scale.view(-1, 1, 1))
        offset = a.sum(1).mul_(shift.view(-1, 1)).unsqueeze(2)
        grad_x = torch.empty_like(self.x) if into is None else into
        for block in self.blocking:
            x = self.blocking.operand(self.x, block, self._x_buffer)
            group = self.taps.group(block.c)
            target = self.blocking.view(grad_x, block)
            for rows, _, _ in self.taps.windows:
                lo, hi = max(0, rows.start - lag), min(T, rows.stop + lag)
                product = self._product_view(block, rows.stop - rows.start)
                torch.bmm(gram[group, rows, lo:hi], x[:, lo:hi], out=product)
                product.add_(offset[group, rows])
                tile = Blocking.unflat(product, block)
                if into is None:
                    target[:, rows].copy_(tile)
                else:
                    target[:, rows].add_(tile)
        return grad_x

    def backward(
        self, gradient: Finish, needs: tuple[bool, bool, bool, bool]
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients ``(x, weight [G, k], bias [G], history)`` where ``needs`` asks for them.

        ``gradient(block, rows, h)`` gets a tile's recomputed charge and returns the loss
        gradient by it (in place or not).
        """
        need_x, need_w, need_b, need_history = needs
        device = self.x.device
        grad_x = torch.empty_like(self.x) if need_x else None
        grad_history = torch.empty_like(self.history) if need_history else None
        sums: dict[tuple[int, int, int], torch.Tensor] = {}
        grad_b = None
        if need_b:
            grad_b = torch.zeros(self.taps.a.shape[0], dtype=self.dtype, device=device)
        for block in self.blocking:
            group = self.taps.group(block.c)
            a = self.taps.a[group]
            tiles, x, history = self.charge(block)
            grads = [gradient(block, w[0], h) for w, h in zip(self.taps.windows, tiles)]
            if grad_b is not None:
                grad_b[group] += sum(g.sum(dim=(1, 2)) for g in grads)
            if need_w:
                self._weight_gradient(sums, group, grads, x, history)
            if grad_x is not None:
                self._input_gradient(block, a, grads, self.blocking.view(grad_x, block))
            if grad_history is not None:
                rows = self.taps.history_rows
                product = self._product_view(block, self.taps.lag)
                torch.bmm(
                    a[:, :rows, : self.taps.lag].transpose(1, 2), grads[0][:, :rows], out=product
                )
                self.blocking.view(grad_history, block).copy_(Blocking.unflat(product, block))
        grad_w = self._fold(sums) if need_w else None
        return grad_x, grad_w, grad_b, grad_history

    def _fold(self, sums: dict[tuple[int, int, int], torch.Tensor]) -> torch.Tensor:
        """``[G, k]`` taps from per-window sums of the gradient of ``A``."""
        grad_a = torch.zeros_like(self.taps.a)
        for (rows, first, last), total in sums.items():
            grad_a[:, :rows, first:last] += total
        return self.taps.weight_gradient(grad_a)

    def _input_gradient(
        self, block: Block, a: torch.Tensor, grads: list[torch.Tensor], target: torch.Tensor
    ) -> None:
        """``target = A^T g`` tile by tile: each tile writes its own input rows, then adds into
        the ``lag`` rows before them, which the previous tile wrote."""
        for (rows, cols, inputs), g in zip(self.taps.windows, grads):
            n, back = rows.stop - rows.start, rows.start - inputs.start
            product = self._product_view(block, n)
            torch.bmm(a[:, :n, cols.start + back : cols.stop].transpose(1, 2), g, out=product)
            target[:, rows].copy_(Blocking.unflat(product, block))
            if back:
                product = self._product_view(block, back)
                tail = a[:, :n, cols.start : cols.start + back].transpose(1, 2)
                torch.bmm(tail, g, out=product)
                target[:, inputs.start : rows.start].add_(Blocking.unflat(product, block))

    def _weight_gradient(
        self,
        sums: dict[tuple[int, int, int], torch.Tensor],
        group: slice,
        grads: list[torch.Tensor],
        x: torch.Tensor,
        history: torch.Tensor | None,
    ) -> None:
        """Add the block's ``g @ input^T`` per window of ``A`` into ``sums[rows, first, last]``,
        one contiguous sum per window (a GEMM's result must be contiguous, see above)."""
        for (rows, cols, inputs), g in zip(self.taps.windows, grads):
            key = (rows.stop - rows.start, cols.start, cols.stop)
            self._sum(sums, key)[group].baddbmm_(g, x[:, inputs].transpose(1, 2))
        if history is not None:
            rows = self.taps.history_rows
            key = (rows, 0, self.taps.lag)
            self._sum(sums, key)[group].baddbmm_(grads[0][:, :rows], history.transpose(1, 2))

    def _sum(self, sums: dict, key: tuple[int, int, int]) -> torch.Tensor:
        if key not in sums:
            rows, first, last = key
            sums[key] = self.taps.a.new_zeros(self.taps.a.shape[0], rows, last - first)
        return sums[key]
