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

import torch

from . import _args, _compile, _host, _source

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
    args: _args.KernelArgs,
    smem: int = 0,
) -> None:
    """Launch kernel ``name`` of ``module`` with ``args`` on PyTorch's current stream of
    ``device``."""
    block = (block, 1) if isinstance(block, int) else tuple(block)
    check_launch(grid, block, smem)
    cupy = require_cupy()
    fn = kernel(module, name, device.index)
    stream = _Stream(torch.cuda.current_stream(device).cuda_stream)
    with cupy.cuda.Device(device.index):
        fn(tuple(grid), (*block, 1), args.kernel_values(), shared_mem=smem, stream=stream)


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


def _check_time_range(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> None:
    """Time indices are int in the kernels, down to U + k steps before the first one."""
    n_t, k = x.shape[0], weight.shape[1]
    if n_t + (k + 8) * dilation > _host.INT32_MAX:
        raise ValueError(
            f"T + (k-1)*dilation = {n_t + (k - 1) * dilation} is too large for the kernels' "
            "int32 time indices"
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
    _check_time_range(x, weight, dilation)
    args = _args.conv_fire_fwd(x, history, out, weight, bias, dilation)
    module, name = conv_fwd_spec(x.dtype, args.k, power_of_two)
    block = _host.block_size(args.N)  # forward: one thread per column offset, 1-D grid
    smem = _host.conv_fwd_smem(block, module.window)
    launch(module, name, x.device, (_cdiv(args.N, block),), block, args, smem)
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
    _check_time_range(x, weight, dilation)
    channels, k = x.shape[2], weight.shape[1]
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x, x.new_zeros((channels, k + 1), dtype=torch.float32)
    module, name = conv_bwd_spec(x.dtype, k, mode, sg)
    columns, positions = x.shape[1] * x.shape[3], x.shape[3]
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
    args = _args.conv_bwd(
        grad_s,
        x,
        history,
        grad_x,
        weight,
        (c0, c1, c2),
        (sg, params),
        (gwb, partial, scratch),
        dilation,
    )
    smem = _host.conv_bwd_smem(block, module.window)
    launch(module, name, x.device, grid, block, args, smem)
    if deterministic:
        gwb = _host.reduce_partials(partial)
    return grad_x, gwb


def conv_stats(
    x: torch.Tensor, weight: torch.Tensor, history: torch.Tensor | None, dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_time_range(x, weight, dilation)
    channels = x.shape[2]
    if x.numel() == 0:
        nan = x.new_full((channels,), float("nan"), dtype=torch.float32)
        return nan, nan.clone()
    module, name = conv_stats_spec(x.dtype, weight.shape[1])
    columns, positions = x.shape[1] * x.shape[3], x.shape[3]
    block = _host.conv_block(columns, channels, positions)
    grid = _host.conv_grid(columns, channels, block)
    partial = x.new_empty((channels, grid[0], 3), dtype=torch.float32)
    args = _args.conv_stats_fwd(x, history, weight, partial, dilation)
    smem = _host.conv_stats_smem(block, module.window)
    launch(module, name, x.device, grid, block, args, smem)
    return _host.combine_stats(partial)


# ---------------------------------------------------------------- dense


def dense_fire_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    out = x.new_empty((weight.shape[0], x.shape[1]))
    if out.numel() == 0:
        return out
    args = _args.dense_fire_fwd(x, out, weight, bias)
    module, name = dense_fwd_spec(x.dtype, args.t_in, args.t_out)
    block, smem = _host.MAX_BLOCK, _host.dense_smem(args.t_out, module.window)
    launch(module, name, x.device, (_cdiv(args.M, block),), block, args, smem)
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
    grad_x = torch.empty_like(x)
    g = x.new_empty((weight.shape[0], x.shape[1]), dtype=torch.float32)
    if g.numel() == 0 or x.numel() == 0:
        return grad_x.zero_(), g.zero_()
    args = _args.dense_fire_bwd(grad_s, x, weight, bias, (sg, params), g, grad_x)
    module, name = dense_bwd_spec(x.dtype, args.t_in, args.t_out)
    block, smem = _host.MAX_BLOCK, _host.dense_smem(args.t_out, module.window)
    launch(module, name, x.device, (_cdiv(args.M, block),), block, args, smem)
    return grad_x, g
