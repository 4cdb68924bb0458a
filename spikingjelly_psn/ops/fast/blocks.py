"""Cache-sized blocks of a ``[T, B, C, S]`` tensor, seen as ``[channels, T, columns]`` GEMM operands.

The per-channel convolution is a batch of small GEMMs, ``[T, T] @ [T, columns]`` per channel
(cut into time tiles). Walking the tensor block by block keeps each block's charge in cache
between the GEMMs and the elementwise work on it, and bounds every temporary by the block size
instead of the input size.

A block is ``x[:, b, c, s]`` for ranges ``b, c, s``. As a GEMM input, with one batch index it
is a strided view (rows ``B·C·S`` apart, columns contiguous) that BLAS reads in place; with
several, or when the dtype must change, it is packed into a scratch buffer (a copy of the
block, not of x). Results are written back through :meth:`Blocking.view`, any layout or dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: Bytes of one block operand. On a CPU a block's few operands stay in L2/L3 together and the
#: per-block Python overhead stays small (2 MiB measured best on a 1 MiB-L2, 32 MiB-L3 CPU);
#: on a GPU, blocks big enough that each kernel fills the device.
BLOCK_BYTES = {"cpu": 2 << 20}
DEVICE_BLOCK_BYTES = 64 << 20
#: An input is cut into about this many blocks at least, so the block-sized scratch buffers stay
#: small next to it, with blocks of ``MIN_BLOCK_BYTES`` at least (fewer, bigger ops).
BLOCK_FRACTION = 8
MIN_BLOCK_BYTES = 256 << 10
#: Fewest columns per channel for which a GEMM on a strided view is efficient.
MIN_COLUMNS = 64


@dataclass(frozen=True)
class Block:
    """One block: batch, channel and spatial ranges."""

    b: slice
    c: slice
    s: slice

    @property
    def channels(self) -> int:
        return self.c.stop - self.c.start

    @property
    def columns(self) -> int:
        return (self.b.stop - self.b.start) * (self.s.stop - self.s.start)


def _ranges(size: int, step: int) -> list[slice]:
    return [slice(i, min(i + step, size)) for i in range(0, size, step)]


class Blocking:
    """The blocks of a ``[T, B, C, S]`` layout and their operands in the compute dtype."""

    def __init__(self, shape: torch.Size, dtype: torch.dtype, device: torch.device, rows: int):
        _, B, C, S = shape
        self.dtype = dtype
        budget = BLOCK_BYTES.get(device.type, DEVICE_BLOCK_BYTES)
        size = rows * B * C * S * dtype.itemsize
        budget = min(budget, max(size // BLOCK_FRACTION, MIN_BLOCK_BYTES))
        cols = max(1, budget // (max(rows, 1) * dtype.itemsize))
        if S >= MIN_COLUMNS:
            nb, ns = 1, min(S, cols)
            nc = max(1, min(C, cols // ns))
        else:
            ns = S
            nb = min(B, -(-MIN_COLUMNS // S))
            nc = max(1, min(C, cols // (nb * S)))
            if nc == C:
                nb = max(nb, min(B, cols // (C * S)))
        self.shape = (nb, nc, ns)
        self.blocks = [
            Block(b, c, s) for b in _ranges(B, nb) for c in _ranges(C, nc) for s in _ranges(S, ns)
        ]
        self.max_numel = nc * nb * ns

    def direct(self, y: torch.Tensor) -> bool:
        """Whether ``y``'s blocks are BLAS operands as they are (no copy needed)."""
        return self.shape[0] == 1 and y.dtype == self.dtype

    def view(self, y: torch.Tensor, block: Block) -> torch.Tensor:
        """``[channels, rows, batch, space]`` view of ``y``'s block, for elementwise work."""
        return y[:, block.b, block.c, block.s].permute(2, 0, 1, 3)

    def buffer(self, rows: int, device: torch.device) -> torch.Tensor:
        """A flat buffer for any block operand with ``rows`` rows."""
        return torch.empty(self.max_numel * rows, dtype=self.dtype, device=device)

    def scratch(self, y: torch.Tensor) -> torch.Tensor | None:
        """A buffer for the blocks of ``y``, or None when they are views (see :meth:`direct`)."""
        return None if self.direct(y) else self.buffer(y.shape[0], y.device)

    def operand(self, y: torch.Tensor, block: Block, buffer: torch.Tensor | None) -> torch.Tensor:
        """``[channels, rows, columns]`` operand of ``y``'s block: a view when ``buffer`` is None
        (see :meth:`scratch`), else a copy of the block in the buffer."""
        if buffer is None:
            return y[:, block.b.start, block.c, block.s].transpose(0, 1)
        rows = y.shape[0]
        out = buffer[: block.channels * rows * block.columns].view(
            block.channels, rows, block.columns
        )
        self.unflat(out, block).copy_(self.view(y, block))
        return out

    @staticmethod
    def unflat(operand: torch.Tensor, block: Block) -> torch.Tensor:
        """``[channels, rows, batch, space]`` view of a ``[channels, rows, columns]`` operand."""
        nb = block.b.stop - block.b.start
        return operand.view(operand.shape[0], operand.shape[1], nb, -1)

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)
