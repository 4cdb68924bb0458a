"""The channel-wise causal convolution of one call, block by block: charge and backward.

Per block and time tile the charge is one batched GEMM with the tile's Toeplitz window (plus
one for the first steps when a history is given), written straight into its destination. The
backward of a block recomputes the charge into a block-sized buffer, lets the caller turn it
into the charge's gradient in place, then runs two more GEMMs per tile: the input gradient,
written into the result, and the gradient of the Toeplitz window, summed over blocks and folded
to taps at the end. Nothing ``[T, N']``-sized is allocated besides the results.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spikingjelly_psn.ops.fast.blocks import Block, Blocking
from spikingjelly_psn.ops.fast.toeplitz import Taps
from spikingjelly_psn.ops.reference import accumulation_dtype

#: Turns a block's charge ``[channels, T, columns]`` into the gradient of the loss by it.
ChargeGradient = Callable[[Block, torch.Tensor], torch.Tensor]


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
        self.taps = Taps(weight, dilation, self.T, self.dtype)
        self.blocking = Blocking(x.shape, self.dtype, x.device, self.T)
        self._x_buffer = self.blocking.scratch(x)
        self._history_buffer = None if history is None else self.blocking.scratch(history)

    def charge(self, block: Block, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Write the block's charge into ``out [channels, T, columns]``; return its inputs."""
        x = self.blocking.operand(self.x, block, self._x_buffer)
        a = self.taps.a[self.taps.group(block.c)]
        for rows, cols, inputs in self.taps.windows:
            torch.bmm(a[:, : rows.stop - rows.start, cols], x[:, inputs], out=out[:, rows])
        history = None
        if self.history is not None:
            history = self.blocking.operand(self.history, block, self._history_buffer)
            rows = self.taps.history_rows
            out[:, :rows].baddbmm_(a[:, :rows, : self.taps.lag], history)
        return x, history

    def bias(self, bias: torch.Tensor, block: Block) -> torch.Tensor:
        """The block's bias as ``[channels, 1, 1]``."""
        return bias[self.taps.group(block.c)].view(-1, 1, 1)

    def forward(
        self, out: torch.Tensor, finish: Callable[[Block, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Fill ``out`` (shaped as x) with ``finish(block, charge)`` block by block."""
        buffer = self.blocking.scratch(out)
        for block in self.blocking:
            o = self.blocking.operand(out, block, buffer, load=False)
            self.charge(block, o)
            result = finish(block, o)
            if result is not o:
                o.copy_(result)
            self.blocking.store(out, block, o, packed=buffer is not None)
        return out

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and biased variance of the charge (parallel variance formula)."""
        buffer = self.blocking.buffer(self.T, self.x.device)
        parts: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor, int]]] = {}
        for block in self.blocking:
            h = self.blocking.take(buffer, block, self.T)
            self.charge(block, h)
            count = h[0].numel()
            mean = h.sum(dim=(1, 2)).div_(count)
            # squared deviations of the block, which is in cache (var_mean is slow on CPUs)
            var = torch.linalg.vector_norm(h.sub_(mean.view(-1, 1, 1)), dim=(1, 2))
            var = var.square_().div_(count)
            parts.setdefault((block.c.start, block.c.stop), []).append((mean, var, count))
        means, variances = [], []
        for key in sorted(parts):
            mean, var, count = zip(*parts[key])
            n = torch.tensor(count, dtype=self.dtype, device=self.x.device).unsqueeze(1)
            mean, var = torch.stack(mean), torch.stack(var)
            total = mean.mul(n).sum(0).div_(n.sum())
            means.append(total)
            variances.append((var + (mean - total).square()).mul_(n).sum(0).div_(n.sum()))
        return torch.cat(means), torch.cat(variances)

    def backward(
        self, gradient: ChargeGradient, needs: tuple[bool, bool, bool, bool]
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients ``(x, weight [G, k], bias [G], history)`` where ``needs`` asks for them.

        ``gradient(block, h)`` gets the block's recomputed charge and returns the loss
        gradient by it (in place or not).
        """
        need_x, need_w, need_b, need_history = needs
        device = self.x.device
        grad_x = torch.empty_like(self.x) if need_x else None
        grad_history = torch.empty_like(self.history) if need_history else None
        x_buffer = None if grad_x is None else self.blocking.scratch(grad_x)
        history_buffer = None if grad_history is None else self.blocking.scratch(grad_history)
        charge = self.blocking.buffer(self.T, device)
        sums: dict[tuple[int, int, int], torch.Tensor] = {}
        grad_b = None
        if need_b:
            grad_b = torch.zeros(self.taps.a.shape[0], dtype=self.dtype, device=device)
        for block in self.blocking:
            group = self.taps.group(block.c)
            h = self.blocking.take(charge, block, self.T)
            x, history = self.charge(block, h)
            g = gradient(block, h)
            if grad_b is not None:
                grad_b[group] += g.sum(dim=(1, 2))
            if need_w:
                self._weight_gradient(sums, group, g, x, history)
            if grad_x is not None:
                o = self.blocking.operand(grad_x, block, x_buffer, load=False)
                self._input_gradient(self.taps.a[group], g, o)
                self.blocking.store(grad_x, block, o, packed=x_buffer is not None)
            if grad_history is not None:
                o = self.blocking.operand(grad_history, block, history_buffer, load=False)
                rows, a = self.taps.history_rows, self.taps.a[group]
                torch.bmm(a[:, :rows, : self.taps.lag].transpose(1, 2), g[:, :rows], out=o)
                self.blocking.store(grad_history, block, o, packed=history_buffer is not None)
        grad_w = None
        if need_w:
            grad_a = torch.zeros_like(self.taps.a)
            for (rows, first, last), total in sums.items():
                grad_a[:, :rows, first:last] += total
            grad_w = self.taps.weight_gradient(grad_a)
        return grad_x, grad_w, grad_b, grad_history

    def _input_gradient(self, a: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
        """``out = A^T g`` tile by tile: each tile writes its own input rows, and adds into the
        ``lag`` rows before them, which the previous tile wrote."""
        for rows, cols, inputs in self.taps.windows:
            n, back = rows.stop - rows.start, rows.start - inputs.start
            head = a[:, :n, cols.start + back : cols.stop].transpose(1, 2)
            torch.bmm(head, g[:, rows], out=out[:, rows])
            if back:
                tail = a[:, :n, cols.start : cols.start + back].transpose(1, 2)
                out[:, inputs.start : rows.start].baddbmm_(tail, g[:, rows])

    def _weight_gradient(
        self,
        sums: dict[tuple[int, int, int], torch.Tensor],
        group: slice,
        g: torch.Tensor,
        x: torch.Tensor,
        history: torch.Tensor | None,
    ) -> None:
        """Add the block's ``g @ input^T`` per window of ``A`` into ``sums[rows, first, last]``.

        One contiguous sum per window: a GEMM into a strided view of ``A``'s gradient would run
        as one small GEMM per channel.
        """
        for rows, cols, inputs in self.taps.windows:
            key = (rows.stop - rows.start, cols.start, cols.stop)
            self._sum(sums, key)[group].baddbmm_(g[:, rows], x[:, inputs].transpose(1, 2))
        if history is not None:
            rows = self.taps.history_rows
            key = (rows, 0, self.taps.lag)
            self._sum(sums, key)[group].baddbmm_(g[:, :rows], history.transpose(1, 2))

    def _sum(self, sums: dict, key: tuple[int, int, int]) -> torch.Tensor:
        if key not in sums:
            rows, first, last = key
            sums[key] = self.taps.a.new_zeros(self.taps.a.shape[0], rows, last - first)
        return sums[key]
