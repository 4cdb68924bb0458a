"""The kernel sources compiled as host C++ (with cuda_compat.h) and driven through ctypes.

By default each conv kernel runs with one thread per block over its whole grid, so what the
GPU reduces per block is here one column's partial sum. With ``launch="gpu"`` the conv kernels
run with the block shapes the launcher picks (``_host``), every thread of a block emulated
between barriers in ascending or descending order (``descending``). The kernel variant (window
size) is the launcher's choice unless a test names one. The wrappers take and return CPU torch
tensors and use the package's own host-side helpers (variant choice, launch shapes,
reductions), so the op is exercised end to end.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from spikingjelly_psn.ops.cupy import _host, _source

SUPPORT_DIR = Path(__file__).resolve().parent
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_P, _I, _F, _L = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_longlong
_SIGNATURES = {
    "emu_ldexp": ([_F, _I], _F),
    "emu_apply_tap": ([_F, _I], _F),
    "emu_pow2_code": ([_F], _I),
    "emu_to_half": ([_P, _P, _L], None),
    "emu_from_half": ([_P, _P, _L], None),
    "emu_to_bf16": ([_P, _P, _L], None),
    "emu_from_bf16": ([_P, _P, _L], None),
    "emu_surrogate": ([_I, _I, _P, _P, _L, _F, _F, _F], None),
    "emu_conv_fwd": ([_I, _I, _I] + [_P] * 5 + [_I] * 9, None),
    "emu_conv_bwd": ([_I, _I, _I] + [_P] * 8 + [_I, _F, _F, _F] + [_P] * 3 + [_I] * 10, None),
    "emu_conv_stats": ([_I, _I] + [_P] * 4 + [_I] * 9, None),
    "emu_set_descending": ([_I], None),
    "emu_barrier_errors": ([], _L),
    "emu_dense_fwd": ([_I, _I, _P, _P, _P, _P, _I, _I, _L, _I], None),
    "emu_dense_bwd": ([_I, _I, _P, _P, _P, _P, _I, _F, _F, _F, _P, _P, _I, _I, _L, _I], None),
}


def compiler() -> str | None:
    return shutil.which("g++")


def build(cache_dir: Path | None = None) -> ctypes.CDLL:
    """Compile harness.cpp with the kernel sources (once per source version) and load it."""
    sources = [SUPPORT_DIR / "harness.cpp", SUPPORT_DIR / "cuda_compat.h"]
    sources += sorted(_source.KERNEL_DIR.glob("*.cu*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "spikingjelly_psn_emulation"
    cache_dir.mkdir(parents=True, exist_ok=True)
    library = cache_dir / f"psn_emu_{digest}.so"
    if not library.exists():
        partial = library.with_suffix(f".{digest}.tmp")
        subprocess.run(
            [
                compiler() or "g++", "-O1", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC",
                f"-I{_source.KERNEL_DIR}", f"-I{SUPPORT_DIR}", str(SUPPORT_DIR / "harness.cpp"),
                "-o", str(partial),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        partial.replace(library)
    lib = ctypes.CDLL(str(library))
    for name, (args, res) in _SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = res
    return lib


def _p(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _strides(weight: torch.Tensor, bias_numel: int, channels: int) -> tuple[int, int]:
    k = weight.shape[1]
    return (k if weight.shape[0] != 1 or channels == 1 else 0), (
        1 if bias_numel != 1 or channels == 1 else 0
    )


class Emulator:
    """The ops of ``spikingjelly_psn.ops.cupy`` run on the CPU through the compiled harness."""

    def __init__(self, lib: ctypes.CDLL, launch: str = "column", descending: bool = False):
        """``launch``: "column" (one thread per block) or "gpu" (the launcher's block shapes)."""
        self.lib = lib
        self.launch = launch
        self.descending = descending

    def _run(self, fn, *args):
        self.lib.emu_set_descending(int(self.descending))
        before = self.lib.emu_barrier_errors()
        fn(*args)
        if self.lib.emu_barrier_errors() != before:
            raise AssertionError("a thread returned while others waited at __syncthreads")

    def conv_fire(self, x, weight, bias, dilation, history=None, power_of_two=False, window=None):
        n_t, batch, channels, positions = x.shape
        k = weight.shape[1]
        window = _host.fwd_window(k) if window is None else window
        block = _host.block_size(x[0].numel()) if self.launch == "gpu" else 1
        x = x.contiguous()
        out = torch.empty_like(x)
        w = weight.float().contiguous()
        b = bias.float().reshape(-1).contiguous()
        ws, bs = _strides(w, b.numel(), channels)
        self._run(
            self.lib.emu_conv_fwd,
            DTYPE_CODES[x.dtype], window, int(power_of_two), _p(x), _p(history), _p(out), _p(w),
            _p(b), n_t, batch, channels, positions, k, dilation, ws, bs, block,
        )  # fmt: skip
        return out

    def conv_backward(
        self, grad_s, x, weight, bias, dilation, sg, params, history=None, deterministic=True,
        stats=None, window=None,
    ):  # fmt: skip
        """(grad_x, per-block partials [C, blocks, k+1] or None, reduced [C, k+1]); with the
        default launch a block is one column.

        ``stats = (mean, c1, c2)`` runs the statistics backward instead of the fire one.
        """
        n_t, batch, channels, positions = x.shape
        k = weight.shape[1]
        mode = _source.MODE_FIRE if stats is None else _source.MODE_STATS
        window = _host.bwd_window(k, mode, sg) if window is None else window
        w = weight.float().contiguous()
        grad_x = torch.empty_like(x)
        columns = batch * positions
        block = (1, 1)
        if self.launch == "gpu":
            block = _host.conv_block(columns, channels, positions)
        blocks = _host.conv_grid(columns, channels, block)[0]
        partial = torch.full((channels, blocks, k + 1), float("nan")) if deterministic else None
        gwb = None if deterministic else torch.zeros(channels, k + 1)
        if stats is None:
            c0, c1, c2 = bias.float().reshape(-1).contiguous(), None, None
        else:
            c0, c1, c2 = stats
        ws, bs = _strides(w, c0.numel(), channels)
        scratch = torch.full(x.shape, float("nan")) if window == _source.GENERIC_K else None
        self._run(
            self.lib.emu_conv_bwd,
            DTYPE_CODES[x.dtype], window, mode, _p(grad_s), _p(x), _p(history), _p(grad_x),
            _p(w), _p(c0), _p(c1), _p(c2), sg, *params, _p(gwb), _p(partial), _p(scratch), n_t,
            batch, channels, positions, k, dilation, ws, bs, *block,
        )  # fmt: skip
        reduced = _host.reduce_partials(partial) if deterministic else gwb
        return grad_x, partial, reduced

    def conv_stats(self, x, weight, dilation, history=None, window=None):
        n_t, batch, channels, positions = x.shape
        k = weight.shape[1]
        window = _host.fwd_window(k) if window is None else window
        w = weight.float().contiguous()
        columns = batch * positions
        block = (1, 1)
        if self.launch == "gpu":
            block = _host.conv_block(columns, channels, positions)
        blocks = _host.conv_grid(columns, channels, block)[0]
        partial = torch.full((channels, blocks, 3), float("nan"))
        ws, _ = _strides(w, channels, channels)
        self._run(
            self.lib.emu_conv_stats,
            DTYPE_CODES[x.dtype], window, _p(x), _p(history), _p(w), _p(partial), n_t, batch,
            channels, positions, k, dilation, ws, *block,
        )  # fmt: skip
        return _host.combine_stats(partial)

    def _dense_launch(self, t_in: int, t_out: int, window: int | None) -> tuple[int, int]:
        window = _source.dense_window(t_in, t_out) if window is None else window
        return window, (_host.MAX_BLOCK if self.launch == "gpu" else 1)

    def dense_fire(self, x, weight, bias, window=None):
        t_in, m = x.shape
        w, b = weight.float().contiguous(), bias.float().reshape(-1).contiguous()
        out = x.new_empty((w.shape[0], m))
        window, block = self._dense_launch(t_in, w.shape[0], window)
        self._run(
            self.lib.emu_dense_fwd,
            DTYPE_CODES[x.dtype], window, _p(x), _p(out), _p(w), _p(b), t_in, w.shape[0], m, block,
        )  # fmt: skip
        return out

    def dense_backward(self, grad_s, x, weight, bias, sg, params, window=None):
        t_in, m = x.shape
        w, b = weight.float().contiguous(), bias.float().reshape(-1).contiguous()
        g = torch.empty((w.shape[0], m))
        grad_x = torch.empty_like(x)
        window, block = self._dense_launch(t_in, w.shape[0], window)
        self._run(
            self.lib.emu_dense_bwd,
            DTYPE_CODES[x.dtype], window, _p(grad_s), _p(x), _p(w), _p(b), sg, *params, _p(g),
            _p(grad_x), t_in, w.shape[0], m, block,
        )  # fmt: skip
        return grad_x, g

    def surrogate(self, sg: int, x: torch.Tensor, params, common: bool = False) -> torch.Tensor:
        """The surrogate derivative as the kernels evaluate it (``common``: the inline ATan /
        Sigmoid of the register-window backward)."""
        x = x.float().contiguous()
        out = torch.empty_like(x)
        self.lib.emu_surrogate(sg, int(common), _p(x), _p(out), x.numel(), *params)
        return out

    def convert(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """fp32 -> fp16/bf16 bit patterns (as that dtype) through the kernels' conversion."""
        x = x.float().contiguous()
        out = torch.empty(x.shape, dtype=dtype)
        fn = self.lib.emu_to_half if dtype == torch.float16 else self.lib.emu_to_bf16
        fn(_p(x), _p(out), x.numel())
        return out

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """fp16/bf16 -> fp32 through the kernels' conversion."""
        out = torch.empty(x.shape, dtype=torch.float32)
        fn = self.lib.emu_from_half if x.dtype == torch.float16 else self.lib.emu_from_bf16
        fn(_p(x.contiguous()), _p(out), x.numel())
        return out
