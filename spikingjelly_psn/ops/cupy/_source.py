"""The CUDA sources of the kernels and every template instantiation the launcher may ask for.

The launcher and the NVRTC test both build from here, so CI compiles exactly what runs.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import torch

KERNEL_DIR = Path(__file__).resolve().parent
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)

# CUDA storage type of each supported input dtype.
SCALAR_TYPES: dict[torch.dtype, str] = {
    torch.float32: "float",
    torch.float16: "psn_half",
    torch.bfloat16: "psn_bf16",
}
INDEX_TYPES: dict[bool, str] = {False: "int", True: "long long"}
MODE_FIRE, MODE_STATS = 0, 1
SOURCES = ("causal_conv.cu", "dense.cu")
# Surrogate template argument: the ids of ATan and Sigmoid get their own instantiation; every
# other surrogate runs in the PSN_SG_RUNTIME instantiation, its id passed as a kernel argument.
SG_RUNTIME = -1
SG_SPECIALISED = (0, 1)
SG_TEMPLATES = (*SG_SPECIALISED, SG_RUNTIME)


def sg_template(surrogate_id: int) -> int:
    """The surrogate template argument that serves ``surrogate_id``."""
    return surrogate_id if surrogate_id in SG_SPECIALISED else SG_RUNTIME


@cache
def assemble(filename: str) -> str:
    """``filename`` with its local ``#include "..."`` files inlined once each (self-contained text).

    Inlining makes the text that NVRTC and CuPy's cache see change whenever a header changes.
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


def nvrtc_options(arch: str | None = None) -> tuple[str, ...]:
    """Compiler options: C++17 and no contraction to FMA (products and sums rounded as in PyTorch)."""
    options = ("-std=c++17", "--fmad=false")
    return (*options, f"-arch={arch}") if arch else options


def conv_fwd_name(scalar: str, index: str) -> str:
    return f"psn_conv_fire_fwd<{scalar}, {index}>"


def conv_bwd_name(scalar: str, surrogate: int, mode: int, index: str) -> str:
    return f"psn_conv_bwd<{scalar}, {surrogate}, {mode}, {index}>"


def conv_stats_name(scalar: str, index: str) -> str:
    return f"psn_conv_stats_fwd<{scalar}, {index}>"


def dense_fwd_name(scalar: str, index: str) -> str:
    return f"psn_dense_fire_fwd<{scalar}, {index}>"


def dense_bwd_name(scalar: str, surrogate: int, index: str) -> str:
    return f"psn_dense_fire_bwd<{scalar}, {surrogate}, {index}>"


def module_names(filename: str, scalar: str, sg: int, index: str) -> list[str]:
    """The instantiations compiled together in one module: one (file, dtype, surrogate template,
    index type)."""
    if filename == "causal_conv.cu":
        return [
            conv_fwd_name(scalar, index),
            conv_bwd_name(scalar, sg, MODE_FIRE, index),
            conv_bwd_name(scalar, SG_RUNTIME, MODE_STATS, index),
            conv_stats_name(scalar, index),
        ]
    if filename == "dense.cu":
        return [dense_fwd_name(scalar, index), dense_bwd_name(scalar, sg, index)]
    raise ValueError(f"unknown kernel source {filename!r}")


def all_modules() -> list[tuple[str, str, int, str]]:
    """Every (file, scalar type, surrogate template, index type) the launcher can build."""
    return [
        (filename, scalar, sg, index)
        for filename in SOURCES
        for scalar in SCALAR_TYPES.values()
        for sg in SG_TEMPLATES
        for index in INDEX_TYPES.values()
    ]
