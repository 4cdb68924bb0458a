"""Compiling (once, cached) and launching the kernels with CuPy on PyTorch's current stream.

CuPy is imported here lazily, on the first launch; importing this module touches no GPU. The
modules are compiled by :mod:`._compile` (not by ``cupy.RawModule``, whose options include
``-ftz=true``) and loaded with ``cupy.cuda.function.Module``; each kernel handle is looked up
once per (module, device) and kept.
"""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import NamedTuple

import numpy as np
import torch

from . import _compile, _host, _source

logger = logging.getLogger(__name__)

CUPY_MISSING = (
    'backend="cupy" needs CuPy, which is not installed: install it with '
    '`pip install "spikingjelly-psn[cupy13]"` (CUDA 13) or '
    '`pip install "spikingjelly-psn[cupy12]"` (CUDA 12), or use backend="torch".'
)

_kernels: dict[tuple[_source.Module, str, int], object] = {}


class _Stream(NamedTuple):
    """What CuPy's kernel call reads from a stream: its handle."""

    ptr: int


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


@cache
def _arch(device: int) -> str:
    return _compile.device_arch(torch.cuda.get_device_capability(device))


def kernel(module: _source.Module, name: str, device: int):
    """Kernel ``name`` of ``module`` on ``device``: the whole module is compiled on first use
    (NVRTC, kept on disk by _compile) and loaded once per device."""
    found = _kernels.get((module, name, device))
    if found is not None:
        return found
    cupy = require_cupy()
    start = time.perf_counter()
    names = _source.module_names(module)
    program = _compile.cached_program(
        _source.assemble(module.filename), module.filename, names, _arch(device)
    )
    with cupy.cuda.Device(device):
        loaded = cupy.cuda.function.Module()
        loaded.load(program.binary)
        for each in names:
            _kernels[(module, each, device)] = loaded.get_function(program.lowered[each])
    logger.debug(
        "loaded %s on cuda:%d in %.2f s", module, device, time.perf_counter() - start
    )  # fmt: skip
    return _kernels[(module, name, device)]


def launch(
    module: _source.Module,
    name: str,
    device: torch.device,
    grid,
    block: int | tuple[int, int],
    args,
    smem: int = 0,
) -> None:
    """Launch kernel ``name`` of ``module`` on PyTorch's current stream of ``device``."""
    block = (block, 1) if isinstance(block, int) else tuple(block)
    check_launch(grid, block, smem)
    cupy = require_cupy()
    fn = kernel(module, name, device.index)
    stream = _Stream(torch.cuda.current_stream(device).cuda_stream)
    with cupy.cuda.Device(device.index):
        fn(tuple(grid), (*block, 1), args, shared_mem=smem, stream=stream)


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


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- which kernel serves a call

Spec = tuple[_source.Module, str]


def conv_fwd_spec(dtype: torch.dtype, k: int, power_of_two: bool) -> Spec:
    scalar, window = _source.SCALAR_TYPES[dtype], _host.fwd_window(k)
    module = _source.Module(_source.CONV, scalar, window)
    return module, _source.conv_fwd_name(scalar, window, power_of_two)


def conv_bwd_spec(dtype: torch.dtype, k: int, mode: int, sg: int) -> Spec:
    scalar, window = _source.SCALAR_TYPES[dtype], _host.bwd_window(k, mode, sg)
    module = _source.Module(_source.CONV, scalar, window)
    return module, _source.conv_bwd_name(scalar, mode, window)


def conv_stats_spec(dtype: torch.dtype, k: int) -> Spec:
    scalar, window = _source.SCALAR_TYPES[dtype], _host.fwd_window(k)
    return _source.Module(_source.CONV, scalar, window), _source.conv_stats_name(scalar, window)


def dense_fwd_spec(dtype: torch.dtype, t_in: int, t_out: int) -> Spec:
    scalar, window = _source.SCALAR_TYPES[dtype], _source.dense_window(t_in, t_out)
    return _source.Module(_source.DENSE, scalar, window), _source.dense_fwd_name(scalar, window)


def dense_bwd_spec(dtype: torch.dtype, t_in: int, t_out: int) -> Spec:
    scalar, window = _source.SCALAR_TYPES[dtype], _source.dense_window(t_in, t_out)
    return _source.Module(_source.DENSE, scalar, window), _source.dense_bwd_name(scalar, window)


# ---------------------------------------------------------------- causal conv


def _conv_shapes(x: torch.Tensor, weight: torch.Tensor, dilation: int):
    n_t, batch, channels, positions = x.shape
    k = weight.shape[1]
    # time indices are int in the kernels, down to U + k steps before the first one
    if n_t + (k + 8) * dilation > _host.INT32_MAX:
        raise ValueError(
            f"T + (k-1)*dilation = {n_t + (k - 1) * dilation} is too large for the kernels' "
            "int32 time indices"
        )
    return n_t, channels, positions, batch * positions, k


def _per_channel_strides(weight: torch.Tensor, per_channel: torch.Tensor, channels: int):
    k = weight.shape[1]
    return (
        np.int32(k if weight.shape[0] != 1 or channels == 1 else 0),
        np.int32(1 if per_channel.numel() != 1 or channels == 1 else 0),
    )


def conv_fire_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    history: torch.Tensor | None,
    dilation: int,
    power_of_two: bool,
) -> torch.Tensor:
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    n_t, channels, positions, columns, k = _conv_shapes(x, weight, dilation)
    w = weight.float().contiguous()
    b = bias.float().contiguous()
    module, name = conv_fwd_spec(x.dtype, k, power_of_two)
    total = columns * channels  # forward: one thread per column offset, 1-D grid
    block = _host.block_size(total)
    w_stride, b_stride = _per_channel_strides(w, b, channels)
    args = (
        ptr(x), ptr(history), ptr(out), ptr(w), ptr(b), np.int32(n_t), np.int32(channels),
        np.int64(positions), np.int64(total), np.int32(k), np.int32(dilation), w_stride, b_stride,
    )  # fmt: skip
    smem = _host.conv_fwd_smem(block, module.window)
    launch(module, name, x.device, (_cdiv(total, block),), block, args, smem)
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
    mode: int,
    sg: int,
    params: tuple[float, float, float],
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x and the per-channel [C, k+1] sums of the weight (first k) and bias gradients."""
    n_t, channels, positions, columns, k = _conv_shapes(x, weight, dilation)
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x, x.new_zeros((channels, k + 1), dtype=torch.float32)
    w = weight.float().contiguous()
    module, name = conv_bwd_spec(x.dtype, k, mode, sg)
    block = _host.conv_block(columns, channels, positions)
    grid = _host.conv_grid(columns, channels, block)
    generic = module.window == _source.GENERIC_K
    scratch = x.new_empty(x.shape, dtype=torch.float32) if generic else None
    if deterministic:
        partial = x.new_empty((channels, grid[0], k + 1), dtype=torch.float32)
        gwb = None
    else:
        partial = None
        gwb = x.new_zeros((channels, k + 1), dtype=torch.float32)
    c0 = c0.float().contiguous()
    w_stride, b_stride = _per_channel_strides(w, c0, channels)
    args = (
        ptr(grad_s), ptr(x), ptr(history), ptr(grad_x), ptr(w), ptr(c0), ptr(c1), ptr(c2),
        np.int32(sg), np.float32(params[0]), np.float32(params[1]), np.float32(params[2]),
        ptr(gwb), ptr(partial), ptr(scratch), np.int32(n_t), np.int32(channels),
        np.int64(positions), np.int64(columns), np.int32(k), np.int32(dilation), w_stride,
        b_stride,
    )  # fmt: skip
    launch(module, name, x.device, grid, block, args, _host.conv_bwd_smem(block, module.window))
    if deterministic:
        gwb = _host.reduce_partials(partial)
    return grad_x, gwb


def conv_stats(
    x: torch.Tensor, weight: torch.Tensor, history: torch.Tensor | None, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n_t, channels, positions, columns, k = _conv_shapes(x, weight, dilation)
    if x.numel() == 0:
        nan = x.new_full((channels,), float("nan"), dtype=torch.float32)
        return nan, nan.clone()
    w = weight.float().contiguous()
    module, name = conv_stats_spec(x.dtype, k)
    block = _host.conv_block(columns, channels, positions)
    grid = _host.conv_grid(columns, channels, block)
    partial = x.new_empty((channels, grid[0], 3), dtype=torch.float32)
    w_stride, _ = _per_channel_strides(w, w[:, 0], channels)
    args = (
        ptr(x), ptr(history), ptr(w), ptr(partial), np.int32(n_t), np.int32(channels),
        np.int64(positions), np.int64(columns), np.int32(k), np.int32(dilation), w_stride,
    )  # fmt: skip
    smem = _host.conv_stats_smem(block, module.window)
    launch(module, name, x.device, grid, block, args, smem)
    return _host.combine_stats(partial)


# ---------------------------------------------------------------- dense


def dense_fire_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    t_in, m = x.shape
    out = x.new_empty((weight.shape[0], m))
    if out.numel() == 0:
        return out
    w, b = weight.float().contiguous(), bias.float().contiguous()
    t_out, block = w.shape[0], _host.MAX_BLOCK
    module, name = dense_fwd_spec(x.dtype, t_in, t_out)
    args = (ptr(x), ptr(out), ptr(w), ptr(b), np.int32(t_in), np.int32(t_out), np.int64(m))
    smem = _host.dense_smem(t_out, module.window)
    launch(module, name, x.device, (_cdiv(m, block),), block, args, smem)
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
    t_in, m = x.shape
    w, b = weight.float().contiguous(), bias.float().contiguous()
    grad_x = torch.empty_like(x)
    g = x.new_empty((w.shape[0], m), dtype=torch.float32)
    if g.numel() == 0 or x.numel() == 0:
        return grad_x.zero_(), g.zero_()
    block = _host.MAX_BLOCK
    args = (
        ptr(grad_s), ptr(x), ptr(w), ptr(b), np.int32(sg),
        np.float32(params[0]), np.float32(params[1]), np.float32(params[2]),
        ptr(g), ptr(grad_x), np.int32(t_in), np.int32(w.shape[0]), np.int64(m),
    )  # fmt: skip
    module, name = dense_bwd_spec(x.dtype, t_in, w.shape[0])
    smem = _host.dense_smem(w.shape[0], module.window)
    launch(module, name, x.device, (_cdiv(m, block),), block, args, smem)
    return grad_x, g
