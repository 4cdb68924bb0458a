"""Static resource report of every kernel instantiation: registers, spills, stack and shared
memory from ptxas (run by NVRTC on the very compile the launcher does, plus ``-Xptxas=-v``),
and the theoretical occupancy at the launch shapes the launcher picks, for T from 4 to 1024.

No GPU needed: ``python -m spikingjelly_psn.ops.cupy.resources`` prints the table (sm_90, the
H100/H200 limits). The tests fail on any spill or an occupancy below 50%.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from . import _compile, _host, _source

T_VALUES = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Limits:
    """Per-multiprocessor limits of one architecture (CUDA occupancy calculator terms)."""

    max_warps: int = 64
    max_blocks: int = 32
    registers: int = 65536
    register_unit: int = 256  # registers are given to a warp in units of this many
    warp_unit: int = 4  # ... and warps in units of this many, when limited by registers
    shared: int = 228 * 1024  # the largest carveout
    shared_unit: int = 128
    shared_reserved: int = 1024  # per block, kept by the system


SM90 = Limits()


@dataclass(frozen=True)
class Usage:
    """What ptxas reports for one kernel."""

    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    static_shared: int


@dataclass(frozen=True)
class Layout:
    """An input shape [T, B, C, S] the report launches every kernel on."""

    name: str
    batch: int
    channels: int
    positions: int


N_PRIME = 2**22
LAYOUTS = (
    Layout("feature map [T, 64, 64, 32, 32]", 64, 64, 1024),
    Layout("[T, N'] (sliding PSN)", 1, 1, N_PRIME),
    Layout("[T, N, C], C = 64", N_PRIME // 64, 64, 1),
    Layout("S = 2, C = 64", N_PRIME // 128, 64, 2),
    Layout("small [T, 2, 3, 100]", 2, 3, 100),
)

_PTXAS = re.compile(
    r"Function properties for (?P<name>\S+)\n"
    r"ptxas\s+\.\s+(?P<stack>\d+) bytes stack frame, (?P<st>\d+) bytes spill stores, "
    r"(?P<ld>\d+) bytes spill loads\n"
    r"ptxas info\s+: Used (?P<regs>\d+) registers(?P<rest>[^\n]*)"
)


def parse_ptxas(log: str) -> dict[str, Usage]:
    """Usage of every entry (by lowered name) in a ``-Xptxas=-v`` log."""
    found = {}
    for m in _PTXAS.finditer(log):
        smem = re.search(r"(\d+) bytes smem", m.group("rest"))
        found[m.group("name")] = Usage(
            int(m.group("regs")), int(m.group("st")), int(m.group("ld")), int(m.group("stack")),
            int(smem.group(1)) if smem else 0,
        )  # fmt: skip
    return found


def occupancy(usage: Usage, threads: int, dynamic_shared: int, limits: Limits = SM90) -> float:
    """Resident warps per multiprocessor over the maximum, for blocks of ``threads`` threads."""
    warps = math.ceil(threads / 32)
    by_warps = min(limits.max_blocks, limits.max_warps // warps)
    per_warp = math.ceil(usage.registers * 32 / limits.register_unit) * limits.register_unit
    warps_by_regs = limits.registers // per_warp // limits.warp_unit * limits.warp_unit
    by_regs = warps_by_regs // warps
    shared = usage.static_shared + dynamic_shared
    by_shared = by_warps
    if shared:
        per_block = math.ceil((shared + limits.shared_reserved) / limits.shared_unit)
        by_shared = limits.shared // (per_block * limits.shared_unit)
    return min(by_warps, by_regs, by_shared) * warps / limits.max_warps


def launch_shape(name: str, n_t: int, layout: Layout) -> tuple[int, int]:
    """(threads per block, dynamic shared bytes) the launcher uses for kernel ``name`` (a name
    expression of _source) on ``layout`` with ``n_t`` steps."""
    args = [a.strip() for a in name[name.index("<") + 1 : -1].split(",")]
    columns = layout.batch * layout.positions
    if name.startswith("psn_conv_fire_fwd"):
        threads = _host.block_size(columns * layout.channels)
        return threads, _host.conv_fwd_smem(threads, int(args[1]))
    block = _host.conv_block(columns, layout.channels, layout.positions)
    if name.startswith("psn_conv_bwd"):
        return block[0] * block[1], _host.conv_bwd_smem(block, int(args[2]))
    if name.startswith("psn_conv_stats_fwd"):
        return block[0] * block[1], _host.conv_stats_smem(block, int(args[1]))
    # dense, W [T, T] (at T > DENSE_MAX_OUT, the largest weight a register window serves)
    t_out = min(n_t, _source.DENSE_MAX_OUT)
    return _host.MAX_BLOCK, _host.dense_smem(t_out, int(args[1]))


@dataclass(frozen=True)
class Row:
    """One instantiation: its usage and its lowest occupancy over the layouts, per T."""

    name: str
    usage: Usage
    occupancy: dict[int, float]


def compile_module(module: _source.Module, arch: str) -> tuple[_source.Module, _compile.Program]:
    """``module`` compiled as the launcher compiles it, with ptxas's resource report in the log."""
    names = _source.module_names(module)
    source = _source.assemble(module.filename)
    return module, _compile.compile_program(source, module.filename, names, arch, verbose=True)


def compile_all(arch: str = "sm_90", workers: int = 2) -> dict[_source.Module, _compile.Program]:
    """Every module compiled with the launcher's options (and ptxas's report), in parallel
    processes (NVRTC holds the GIL)."""
    modules = _source.all_modules()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        return dict(pool.map(compile_module, modules, [arch] * len(modules)))


def rows(programs: dict[_source.Module, _compile.Program]) -> list[Row]:
    """The report's rows from compiled programs (verbose, as compile_all makes them)."""
    result = []
    for module, program in programs.items():
        usage = parse_ptxas(program.log)
        for name in _source.module_names(module):
            use = usage[program.lowered[name]]
            occ = {
                n_t: min(occupancy(use, *launch_shape(name, n_t, layout)) for layout in LAYOUTS)
                for n_t in T_VALUES
            }
            result.append(Row(name, use, occ))
    return result


def format_table(report: list[Row]) -> str:
    """Markdown table: registers, spills, stack, static shared memory, occupancy per T."""
    head = "| kernel | regs | spill st/ld (B) | stack (B) | smem (B) | " + " | ".join(
        f"T={t}" for t in T_VALUES
    )
    lines = [head + " |", "|" + "---|" * (5 + len(T_VALUES))]
    for row in report:
        u = row.usage
        occ = " | ".join(f"{row.occupancy[t]:.0%}" for t in T_VALUES)
        lines.append(
            f"| `{row.name}` | {u.registers} | {u.spill_stores}/{u.spill_loads} | {u.stack} | "
            f"{u.static_shared} | {occ} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args(argv)
    report = rows(compile_all(options.arch, options.workers))
    print(format_table(report))
    bad = [r.name for r in report if r.usage.spill_stores or min(r.occupancy.values()) < 0.5]
    print(f"\n{len(report)} instantiations; spills or occupancy < 50%: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
