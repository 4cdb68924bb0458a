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

from spikingjelly_psn.ops.cupy import _args, _host, _launch, _source

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


class Emulator:
    """The ops of ``spikingjelly_psn.ops.cupy`` run on the CPU through the compiled harness."""

    def __init__(self, lib: ctypes.CDLL, launch: str = "column", descending: bool = False):
        """``launch``: "column" (one thread per block) or "gpu" (the launcher's block shapes)."""
        self.lib = lib
        self.launch_shapes = launch
        self.descending = descending

    def _run(self, fn, *args):
        self.lib.emu_set_descending(int(self.descending))
        before = self.lib.emu_barrier_errors()
        fn(*args)
        if self.lib.emu_barrier_errors() != before:
            raise AssertionError("a thread returned while others waited at __syncthreads")

    def launch(self, module, name, device, grid, block, args, smem=0) -> None:
        """``_launch.launch`` on the CPU: kernel ``name`` of ``module`` with ``args``, every
        thread of each ``block`` emulated (the grid follows from the sizes in ``args``)."""
        block = (block, 1) if isinstance(block, int) else tuple(block)
        _launch.check_launch(grid, block, smem)
        template = name[name.index("<") + 1 : -1].split(", ")  # scalar, window, variant
        variant = {"true": 1, "false": 0}.get(template[-1], 0)
        if isinstance(args, _args.ConvBwd):
            variant = int(template[1])
        self.call(args, module.window, block, variant)

    def call(self, a, window: int, block: tuple[int, int], variant: int = 0) -> None:
        """Run the kernel that ``a`` (an ``_args`` structure) is for, with the register window
        ``window``; ``variant`` is the power-of-two flag of the forward or the backward's mode."""
        dtype = DTYPE_CODES[a.x.dtype]
        if isinstance(a, _args.ConvFireFwd):
            self._run(
                self.lib.emu_conv_fwd,
                dtype, window, variant, _p(a.x), _p(a.hist), _p(a.out), _p(a.weight), _p(a.bias),
                a.n_t, a.N // (a.C * a.S), a.C, a.S, a.k, a.d, a.w_stride, a.b_stride, block[0],
            )  # fmt: skip
        elif isinstance(a, _args.ConvBwd):
            self._run(
                self.lib.emu_conv_bwd,
                dtype, window, variant, _p(a.grad_s), _p(a.x), _p(a.hist), _p(a.grad_x),
                _p(a.weight), _p(a.c0), _p(a.c1), _p(a.c2), a.sg, a.p0, a.p1, a.p2, _p(a.gwb),
                _p(a.partial), _p(a.scratch), a.n_t, a.R // a.S, a.C, a.S, a.k, a.d, a.w_stride,
                a.b_stride, *block,
            )  # fmt: skip
        elif isinstance(a, _args.ConvStatsFwd):
            self._run(
                self.lib.emu_conv_stats,
                dtype, window, _p(a.x), _p(a.hist), _p(a.weight), _p(a.partial), a.n_t,
                a.R // a.S, a.C, a.S, a.k, a.d, a.w_stride, *block,
            )  # fmt: skip
        elif isinstance(a, _args.DenseFireFwd):
            self._run(
                self.lib.emu_dense_fwd,
                dtype, window, _p(a.x), _p(a.out), _p(a.weight), _p(a.bias), a.t_in, a.t_out, a.M,
                block[0],
            )  # fmt: skip
        else:
            self._run(
                self.lib.emu_dense_bwd,
                dtype, window, _p(a.grad_s), _p(a.x), _p(a.weight), _p(a.bias), a.sg, a.p0, a.p1,
                a.p2, _p(a.g), _p(a.grad_x), a.t_in, a.t_out, a.M, block[0],
            )  # fmt: skip

    def _conv_block(self, x: torch.Tensor) -> tuple[int, int]:
        batch, channels, positions = x.shape[1:]
        if self.launch_shapes != "gpu":
            return (1, 1)
        return _host.conv_block(batch * positions, channels, positions)

    def conv_fire(self, x, weight, bias, dilation, history=None, power_of_two=False, window=None):
        x = x.contiguous()
        a = _args.conv_fire_fwd(x, history, torch.empty_like(x), weight, bias, dilation)
        window = _host.fwd_window(a.k) if window is None else window
        block = _host.block_size(x[0].numel()) if self.launch_shapes == "gpu" else 1
        self.call(a, window, (block, 1), int(power_of_two))
        return a.out

    def conv_backward(
        self, grad_s, x, weight, bias, dilation, sg, params, history=None, deterministic=True,
        stats=None, window=None,
    ):  # fmt: skip
        """(grad_x, per-block partials [C, blocks, k+1] or None, reduced [C, k+1]); with the
        default launch a block is one column.

        ``stats = (mean, c1, c2)`` runs the statistics backward instead of the fire one.
        """
        batch, channels, positions = x.shape[1:]
        k = weight.shape[1]
        mode = _source.MODE_FIRE if stats is None else _source.MODE_STATS
        window = _host.bwd_window(k, mode, sg) if window is None else window
        block = self._conv_block(x)
        blocks = _host.conv_grid(batch * positions, channels, block)[0]
        partial = torch.full((channels, blocks, k + 1), float("nan")) if deterministic else None
        gwb = None if deterministic else torch.zeros(channels, k + 1)
        scratch = torch.full(x.shape, float("nan")) if window == _source.GENERIC_K else None
        a = _args.conv_bwd(
            grad_s, x, history, torch.empty_like(x), weight,
            (bias, None, None) if stats is None else stats, (sg, params), (gwb, partial, scratch),
            dilation,
        )  # fmt: skip
        self.call(a, window, block, mode)
        reduced = _host.reduce_partials(partial) if deterministic else gwb
        return a.grad_x, partial, reduced

    def conv_stats(self, x, weight, dilation, history=None, window=None):
        batch, channels, positions = x.shape[1:]
        window = _host.fwd_window(weight.shape[1]) if window is None else window
        block = self._conv_block(x)
        blocks = _host.conv_grid(batch * positions, channels, block)[0]
        partial = torch.full((channels, blocks, 3), float("nan"))
        self.call(_args.conv_stats_fwd(x, history, weight, partial, dilation), window, block)
        return _host.combine_stats(partial)

    def _dense_launch(self, t_in: int, t_out: int, window: int | None) -> tuple[int, int]:
        window = _source.dense_window(t_in, t_out) if window is None else window
        return window, (_host.MAX_BLOCK if self.launch_shapes == "gpu" else 1)

    def dense_fire(self, x, weight, bias, window=None):
        a = _args.dense_fire_fwd(x, x.new_empty((weight.shape[0], x.shape[1])), weight, bias)
        window, block = self._dense_launch(a.t_in, a.t_out, window)
        self.call(a, window, (block, 1))
        return a.out

    def dense_backward(self, grad_s, x, weight, bias, sg, params, window=None):
        g = torch.empty((weight.shape[0], x.shape[1]))
        a = _args.dense_fire_bwd(grad_s, x, weight, bias, (sg, params), g, torch.empty_like(x))
        window, block = self._dense_launch(a.t_in, a.t_out, window)
        self.call(a, window, (block, 1))
        return a.grad_x, a.g

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
