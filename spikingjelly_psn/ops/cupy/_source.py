"""The CUDA sources of the kernels and every template instantiation the launcher may ask for.

The launcher, the NVRTC test and the resource report all build from here, so CI compiles
exactly what runs.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch

KERNEL_DIR = Path(__file__).resolve().parent
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)

# CUDA storage type of each supported input dtype.
SCALAR_TYPES: dict[torch.dtype, str] = {
    torch.float32: "float",
    torch.float16: "psn_half",
    torch.bfloat16: "psn_bf16",
}
MODE_FIRE, MODE_STATS = 0, 1
CONV, DENSE = "causal_conv.cu", "dense.cu"
SOURCES = (CONV, DENSE)
# Window sizes of the register-window conv kernels (a kernel for K serves every k <= K);
# GENERIC_K (0) serves any k.
WINDOWS = (4, 8, 16)
GENERIC_K = 0
# Input steps held in registers by the dense kernels (one serves T_in <= it, T_out <= DENSE_MAX_OUT);
# 0 serves any shape.
DENSE_WINDOWS = (8, 16, 32)
DENSE_MAX_OUT = 64


class Module(NamedTuple):
    """One compiled unit: a source, a storage type and a window size (conv: taps, dense: input
    steps held in registers)."""

    filename: str
    scalar: str
    window: int = GENERIC_K


def window(k: int) -> int:
    """The smallest register window that holds k taps, or GENERIC_K."""
    return next((size for size in WINDOWS if k <= size), GENERIC_K)


@cache
def assemble(filename: str) -> str:
    """``filename`` with its local ``#include "..."`` files inlined once each (self-contained text).

    Inlining makes the text that NVRTC and the compile cache see change whenever a header changes.
    """
    seen: set[str] = set()

    def expand(name: str) -> str:
        if name in seen:
            return ""
        seen.add(name)
        text = (KERNEL_DIR / name).read_text()
        text = text.replace("#pragma once", "")
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(filename)


def conv_fwd_name(scalar: str, window: int, power_of_two: bool) -> str:
    return f"psn_conv_fire_fwd<{scalar}, {window}, {str(power_of_two).lower()}>"


def conv_bwd_name(scalar: str, mode: int, window: int) -> str:
    return f"psn_conv_bwd<{scalar}, {mode}, {window}>"


def conv_stats_name(scalar: str, window: int) -> str:
    return f"psn_conv_stats_fwd<{scalar}, {window}>"


def dense_window(t_in: int, t_out: int) -> int:
    """The dense kernels' register window for a [t_out, t_in] weight, or GENERIC_K."""
    if t_out > DENSE_MAX_OUT:
        return GENERIC_K
    return next((size for size in DENSE_WINDOWS if t_in <= size), GENERIC_K)


def dense_fwd_name(scalar: str, window: int) -> str:
    return f"psn_dense_fire_fwd<{scalar}, {window}>"


def dense_bwd_name(scalar: str, window: int) -> str:
    return f"psn_dense_fire_bwd<{scalar}, {window}>"


def module_names(module: Module) -> list[str]:
    """The instantiations compiled together in one module."""
    filename, scalar, size = module
    if filename == CONV:
        return [
            conv_fwd_name(scalar, size, False),
            conv_fwd_name(scalar, size, True),
            conv_bwd_name(scalar, MODE_FIRE, size),
            conv_bwd_name(scalar, MODE_STATS, size),
            conv_stats_name(scalar, size),
        ]
    if filename == DENSE:
        return [dense_fwd_name(scalar, size), dense_bwd_name(scalar, size)]
    raise ValueError(f"unknown kernel source {filename!r}")


def all_modules() -> list[Module]:
    """Every module the launcher can build."""
    conv = [
        Module(CONV, scalar, size)
        for scalar in SCALAR_TYPES.values()
        for size in (*WINDOWS, GENERIC_K)
    ]
    dense = [
        Module(DENSE, scalar, size)
        for scalar in SCALAR_TYPES.values()
        for size in (*DENSE_WINDOWS, GENERIC_K)
    ]
    return conv + dense


def all_names(filename: str) -> list[str]:
    """Every instantiation of ``filename``, sorted."""
    return sorted({n for m in all_modules() if m.filename == filename for n in module_names(m)})
