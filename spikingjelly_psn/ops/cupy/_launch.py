"""Compiling (once, cached) and launching the kernels with CuPy on PyTorch's current stream.

CuPy is imported here lazily, on the first launch; importing this module touches no GPU.
"""

from __future__ import annotations

import logging
import time
from functools import cache

import numpy as np
import torch

from spikingjelly_psn.backend import CUPY_MISSING

from . import _host, _source

logger = logging.getLogger(__name__)


_modules: dict[tuple[str, str, int, str, int], object] = {}
_streams: dict[tuple[int, int], object] = {}


def require_cupy():
    """The ``cupy`` module, or an ImportError that says how to install it."""
    try:
        import cupy
    except ImportError as error:
        raise ImportError(CUPY_MISSING) from error
    return cupy


@cache
def gpu_available() -> bool:
    """Whether CuPy sees a usable GPU and driver (asked once)."""
    return bool(require_cupy().is_available())


def require_gpu() -> None:
    """Raise a RuntimeError unless CuPy can run kernels here."""
    if not gpu_available():
        raise RuntimeError(
            'backend="cupy" found CuPy but no usable CUDA GPU/driver (cupy.is_available() is '
            'False); run on a machine with an NVIDIA GPU, or use backend="torch".'
        )


def kernel(filename: str, scalar: str, sg: int, index: str, name: str, device: int):
    """Kernel ``name`` of module (filename, scalar, sg, index) on ``device``, built on first use
    (NVRTC once per module; CuPy also keeps the binary in its on-disk cache)."""
    key = (filename, scalar, sg, index, device)
    module = _modules.get(key)
    if module is None:
        cupy = require_cupy()
        start = time.perf_counter()
        with cupy.cuda.Device(device):
            module = cupy.RawModule(
                code=_source.assemble(filename),
                options=_source.nvrtc_options(),
                name_expressions=_source.module_names(filename, scalar, sg, index),
            )
            module.compile()
        logger.debug(
            "compiled %s for (%s, surrogate template %d, %s) on cuda:%d in %.2f s",
            filename, scalar, sg, index, device, time.perf_counter() - start,
        )  # fmt: skip
        _modules[key] = module
    return module.get_function(name)


def _stream(cupy, device: torch.device):
    """A CuPy view of PyTorch's current stream on ``device`` (cached per stream handle)."""
    torch_stream = torch.cuda.current_stream(device)
    key = (device.index, torch_stream.cuda_stream)
    stream = _streams.get(key)
    if stream is None:
        if hasattr(cupy.cuda.Stream, "from_external"):
            stream = cupy.cuda.Stream.from_external(torch_stream)
        else:  # CuPy 13
            stream = cupy.cuda.ExternalStream(torch_stream.cuda_stream, device.index)
        _streams[key] = stream
    return stream


def launch(
    spec: tuple[str, str, int, str, str],
    device: torch.device,
    grid,
    block: int | tuple[int, int],
    args,
    smem: int = 0,
) -> None:
    """Launch kernel ``spec`` = (file, scalar, sg, index, name) on PyTorch's current stream of
    ``device``, under that device."""
    block = (block, 1) if isinstance(block, int) else tuple(block)
    check_launch(grid, block, smem)
    cupy = require_cupy()
    with cupy.cuda.Device(device.index), _stream(cupy, device):
        fn = kernel(*spec, device.index)
        fn(tuple(grid), (*block, 1), args, shared_mem=smem)


def check_launch(grid, block: tuple[int, int], smem: int) -> None:
    """The limits every launch must respect (the kernels set no shared-memory opt-in)."""
    grid = tuple(grid) + (1,) * (3 - len(grid))
    if not (
        block[0] * block[1] <= 1024
        and 0 < grid[0] <= 2**31 - 1
        and 0 < grid[1] <= 65535
        and 0 < grid[2] <= 65535
        and 0 <= smem <= _host.SMEM_LIMIT
    ):
        raise RuntimeError(f"invalid launch: grid {grid}, block {block}, {smem} B shared memory")


def ptr(tensor: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if tensor is None else tensor.data_ptr())


def _index(wide: bool):
    return (_source.INDEX_TYPES[wide], np.int64 if wide else np.int32)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- causal conv


def _conv_shapes(x: torch.Tensor, weight: torch.Tensor, dilation: int):
    n_t, batch, channels, positions = x.shape
    k = weight.shape[1]
    lag = (k - 1) * dilation
    if n_t + lag > _host.INT32_MAX:  # padded time indices are int in the kernels
        raise ValueError(f"T + (k-1)*dilation = {n_t + lag} exceeds the kernels' int32 range")
    columns = batch * positions
    wide = _host.needs_64bit((n_t + lag + 1) * batch * channels * positions)
    return n_t, channels, positions, columns, k, lag, wide


def conv_fire_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    history: torch.Tensor | None,
    dilation: int,
    power_of_two: bool,
    sg: int,
) -> torch.Tensor:
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    n_t, channels, positions, columns, k, _, wide = _conv_shapes(x, weight, dilation)
    w = weight.float().contiguous()
    b = bias.float().contiguous()
    code = _host.pow2_codes(w) if power_of_two else None
    index, itype = _index(wide)
    scalar = _source.SCALAR_TYPES[x.dtype]
    spec = ("causal_conv.cu", scalar, _source.sg_template(sg), index,
            _source.conv_fwd_name(scalar, index))  # fmt: skip
    total = columns * channels  # forward: one thread per column offset, 1-D grid
    block = _host.block_size(total)
    args = (
        ptr(x), ptr(history), ptr(out), ptr(w), ptr(code), ptr(b),
        np.int32(n_t), np.int32(channels), itype(positions), itype(total),
        np.int32(k), np.int32(dilation),
        np.int32(k if w.shape[0] != 1 or channels == 1 else 0),
        np.int32(1 if b.numel() != 1 or channels == 1 else 0),
    )  # fmt: skip
    launch(spec, x.device, (_cdiv(total, block),), block, args)
    return out


def conv_backward(
    grad_s: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    c0: torch.Tensor,
    c1: torch.Tensor | None,
    c2: torch.Tensor | None,
    history: torch.Tensor | None,
    dilation: int,
    power_of_two: bool,
    mode: int,
    sg: int,
    params: tuple[float, float, float],
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x and the per-channel [C, k+1] sums of the weight (first k) and bias gradients."""
    n_t, channels, positions, columns, k, _, wide = _conv_shapes(x, weight, dilation)
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x, x.new_zeros((channels, k + 1), dtype=torch.float32)
    w = weight.float().contiguous()
    code = _host.pow2_codes(w) if power_of_two else None
    block, smem, use_scratch = _host.conv_bwd_config(n_t, columns, channels, positions)
    grid = _host.conv_grid(columns, channels, block)
    blocks = grid[0]
    scratch = x.new_empty(x.shape, dtype=torch.float32) if use_scratch else None
    if deterministic:
        partial = x.new_empty((channels, blocks, k + 1), dtype=torch.float32)
        gwb = None
    else:
        partial = None
        gwb = x.new_zeros((channels, k + 1), dtype=torch.float32)
    index, itype = _index(wide)
    scalar = _source.SCALAR_TYPES[x.dtype]
    sg_t = _source.sg_template(sg) if mode == _source.MODE_FIRE else _source.SG_RUNTIME
    module_sg = _source.sg_template(sg) if mode == _source.MODE_FIRE else _source.SG_SPECIALISED[0]
    spec = ("causal_conv.cu", scalar, module_sg, index,
            _source.conv_bwd_name(scalar, sg_t, mode, index))  # fmt: skip
    c0 = c0.float().contiguous()
    args = (
        ptr(grad_s), ptr(x), ptr(history), ptr(grad_x), ptr(w), ptr(code),
        ptr(c0), ptr(c1), ptr(c2), np.int32(sg),
        np.float32(params[0]), np.float32(params[1]), np.float32(params[2]),
        ptr(gwb), ptr(partial), ptr(scratch),
        np.int32(n_t), np.int32(channels), itype(positions), itype(columns),
        np.int32(k), np.int32(dilation),
        np.int32(k if w.shape[0] != 1 or channels == 1 else 0),
        np.int32(1 if c0.numel() != 1 or channels == 1 else 0),
    )  # fmt: skip
    launch(spec, x.device, grid, block, args, smem)
    if deterministic:
        gwb = _host.reduce_partials(partial)
    return grad_x, gwb


def conv_stats(
    x: torch.Tensor, weight: torch.Tensor, history: torch.Tensor | None, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n_t, channels, positions, columns, k, _, wide = _conv_shapes(x, weight, dilation)
    if x.numel() == 0:
        nan = x.new_full((channels,), float("nan"), dtype=torch.float32)
        return nan, nan.clone()
    w = weight.float().contiguous()
    block = _host.conv_block(columns, channels, positions)
    grid = _host.conv_grid(columns, channels, block)
    partial = x.new_empty((channels, grid[0], 3), dtype=torch.float32)
    index, itype = _index(wide)
    scalar = _source.SCALAR_TYPES[x.dtype]
    spec = ("causal_conv.cu", scalar, _source.SG_SPECIALISED[0], index,
            _source.conv_stats_name(scalar, index))  # fmt: skip
    args = (
        ptr(x), ptr(history), ptr(w), ptr(partial),
        np.int32(n_t), np.int32(channels), itype(positions), itype(columns),
        np.int32(k), np.int32(dilation), np.int32(k if w.shape[0] != 1 or channels == 1 else 0),
    )  # fmt: skip
    launch(spec, x.device, grid, block, args, 3 * block[0] * block[1] * 4)
    return _host.combine_stats(partial)


# ---------------------------------------------------------------- dense


def _dense_setup(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    t_in, m = x.shape
    t_out = weight.shape[0]
    wide = _host.needs_64bit((max(t_in, t_out) + 1) * m)
    return t_in, t_out, m, wide, weight.float().contiguous(), bias.float().contiguous()


def dense_fire_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sg: int
) -> torch.Tensor:
    t_in, t_out, m, wide, w, b = _dense_setup(x, weight, bias)
    out = x.new_empty((t_out, m))
    if out.numel() == 0:
        return out
    index, itype = _index(wide)
    scalar = _source.SCALAR_TYPES[x.dtype]
    spec = ("dense.cu", scalar, _source.sg_template(sg), index,
            _source.dense_fwd_name(scalar, index))  # fmt: skip
    block = _host.MAX_BLOCK
    args = (ptr(x), ptr(out), ptr(w), ptr(b), np.int32(t_in), np.int32(t_out), itype(m))
    launch(spec, x.device, (_cdiv(m, block),), block, args)
    return out


def dense_backward(
    grad_s: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    sg: int,
    params: tuple[float, float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x and g = dLoss/dH [T_out, M] in fp32 (for the weight-gradient GEMM)."""
    t_in, t_out, m, wide, w, b = _dense_setup(x, weight, bias)
    grad_x = torch.empty_like(x)
    g = x.new_empty((t_out, m), dtype=torch.float32)
    if g.numel() == 0 or x.numel() == 0:
        return grad_x.zero_(), g.zero_()
    index, itype = _index(wide)
    scalar = _source.SCALAR_TYPES[x.dtype]
    sg_t = _source.sg_template(sg)
    spec = ("dense.cu", scalar, sg_t, index, _source.dense_bwd_name(scalar, sg_t, index))
    block = _host.MAX_BLOCK
    args = (
        ptr(grad_s), ptr(x), ptr(w), ptr(b), np.int32(sg),
        np.float32(params[0]), np.float32(params[1]), np.float32(params[2]),
        ptr(g), ptr(grad_x), np.int32(t_in), np.int32(t_out), itype(m),
    )  # fmt: skip
    launch(spec, x.device, (_cdiv(m, block),), block, args)
    return grad_x, g
