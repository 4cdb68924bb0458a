"""NVRTC compilation of the kernel modules with the project's own options.

CuPy's ``RawModule`` appends ``-ftz=true`` to every compile, which flushes subnormal inputs,
products and comparisons to zero (a negative subnormal charge would then spike). The modules
are therefore compiled here, through the NVRTC binding CuPy ships, with exactly OPTIONS, and the
binary is loaded with ``cupy.cuda.function.Module``. The tests and the resource report call the
same :func:`compile_program`, so CI compiles what runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

# IEEE semantics throughout, as the PyTorch reference computes: subnormals kept (-ftz=false),
# division and square root correctly rounded, no contraction of a product and a sum into an FMA
# (every product and sum rounded on its own; kernels that may fuse use __fmaf_rn explicitly).
OPTIONS: tuple[str, ...] = (
    "-std=c++17",
    "-ftz=false",
    "-prec-div=true",
    "-prec-sqrt=true",
    "-fmad=false",
)


def nvrtc_options(arch: str) -> tuple[str, ...]:
    """The exact option list of every compile for ``arch`` (``sm_90``, or ``compute_90`` for PTX)."""
    return (*OPTIONS, f"-arch={arch}")


@dataclass(frozen=True)
class Program:
    """A compiled program: the binary (cubin for sm_*, NUL-terminated PTX for compute_*), the
    lowered name of each instantiation, and NVRTC's log."""

    binary: bytes
    lowered: dict[str, str]
    log: str


def _nvrtc():
    from cupy_backends.cuda.libs import nvrtc

    return nvrtc


def compile_program(
    source: str, filename: str, names: list[str], arch: str, verbose: bool = False
) -> Program:
    """Compile ``source`` for ``arch`` with OPTIONS and the instantiations ``names``.

    ``verbose`` adds ptxas's resource report to the log (``-Xptxas=-v``; the binary is the same).
    """
    nvrtc = _nvrtc()
    options = list(nvrtc_options(arch)) + (["-Xptxas=-v"] if verbose else [])
    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as error:
            raise RuntimeError(f"{filename} ({arch}):\n{nvrtc.getProgramLog(prog)}") from error
        binary = nvrtc.getCUBIN(prog) if arch.startswith("sm_") else nvrtc.getPTX(prog)
        if isinstance(binary, str):
            binary = binary.encode()
        if not arch.startswith("sm_") and not binary.endswith(b"\0"):
            binary += b"\0"  # the driver reads PTX as a C string
        lowered = {name: nvrtc.getLoweredName(prog, name) for name in names}
        return Program(bytes(binary), lowered, nvrtc.getProgramLog(prog))
    finally:
        nvrtc.destroyProgram(prog)


def device_arch(capability: tuple[int, int]) -> str:
    """``sm_XY`` for a device of compute capability (X, Y) when NVRTC knows it, else PTX for the
    newest architecture it knows (the driver compiles that)."""
    cc = capability[0] * 10 + capability[1]
    supported = tuple(_nvrtc().getSupportedArchs())
    if cc in supported:
        return f"sm_{cc}"
    return f"compute_{max(a for a in supported if a <= cc) if min(supported) <= cc else cc}"


def cache_dir() -> Path:
    """Where compiled programs are kept: $SPIKINGJELLY_PSN_CACHE, else the user cache directory."""
    root = os.environ.get("SPIKINGJELLY_PSN_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikingjelly_psn" / "kernels"


def cached_program(source: str, filename: str, names: list[str], arch: str) -> Program:
    """:func:`compile_program`, kept on disk by a hash of everything that shapes the binary."""
    nvrtc_version = ".".join(map(str, _nvrtc().getVersion()))
    key = json.dumps([source, filename, sorted(names), nvrtc_options(arch), nvrtc_version])
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    folder = cache_dir()
    binary_path, names_path = folder / f"{digest}.bin", folder / f"{digest}.json"
    try:
        lowered = json.loads(names_path.read_text())
        if set(lowered) == set(names):
            return Program(binary_path.read_bytes(), lowered, "")
    except (OSError, ValueError):
        pass
    program = compile_program(source, filename, names, arch)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in (
            (binary_path, program.binary),
            (names_path, json.dumps(program.lowered).encode()),
        ):
            partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            partial.replace(path)  # binary first, names last: names present means complete
    except OSError:
        pass  # a read-only home: compile again next time
    return program
