"""Every kernel module compiled once per test session, for each architecture CI checks, the way
the launcher compiles it (plus ptxas's report). One process per core: NVRTC holds the GIL."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import cache

from spikingjelly_psn.ops.cupy import _compile, _source, resources

ARCHS = ("sm_80", "sm_90")


@cache
def programs() -> dict[str, dict[_source.Module, _compile.Program]]:
    """{arch: {module: program}} for ARCHS."""
    jobs = [(module, arch) for arch in ARCHS for module in _source.all_modules()]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        done = list(pool.map(resources.compile_module, *zip(*jobs)))
    result: dict[str, dict] = {arch: {} for arch in ARCHS}
    for (_, arch), (module, program) in zip(jobs, done):
        result[arch][module] = program
    return result
