"""Checks of the cupy backend that need a GPU, run by ``scripts/validate_gpu.sh``.

``python -m spikingjelly_psn.ops.cupy.gpu_checks COMMAND``:

- ``prefill``: compile every module for this GPU into the kernel cache, in parallel.
- ``kernels``: a small case of every kernel instantiation through the public ops, forward and
  backward, checked against the torch backend (what compute-sanitizer runs).
- ``attributes``: registers, local memory and occupancy of every kernel as the driver reports
  them, next to the static report.
- ``pow2``: power-of-two taps against float taps on the same weights: spikes bit-identical,
  time ratio (goal: at most 1.15).
- ``goals RESULTS.csv... [--pow2 FILE] [--merge OUT.csv]``: the speed goals of the cupy backend,
  judged from benchmark results.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from spikingjelly_psn.ops import surrogates

from . import _launch, _source, resources

# ---------------------------------------------------------------- kernel cases


@dataclass(frozen=True)
class Case:
    """One call of an op, forward and backward, on a small input with partial blocks."""

    op: str  # "conv" (fire), "stats" or "dense"
    dtype: torch.dtype
    k: int = 4
    power_of_two: bool = False
    surrogate: str = "ATan"
    shape: tuple[int, ...] = (9, 2, 37, 3)  # [T, B, C, S]; dense: [T, M]
    dilation: int = 2
    deterministic: bool = False

    def specs(self) -> set[_launch.Spec]:
        """The kernels this case launches."""
        if self.op == "dense":
            t_in, t_out = self.shape[0], self.shape[0]
            return {
                _launch.dense_fwd_spec(self.dtype, t_in, t_out),
                _launch.dense_bwd_spec(self.dtype, t_in, t_out),
            }
        if self.op == "stats":
            return {
                _launch.conv_stats_spec(self.dtype, self.k),
                _launch.conv_bwd_spec(self.dtype, self.k, _source.MODE_STATS, 0),
            }
        sg = surrogates.SURROGATES[self.surrogate][0]
        return {
            _launch.conv_fwd_spec(self.dtype, self.k, self.power_of_two),
            _launch.conv_bwd_spec(self.dtype, self.k, _source.MODE_FIRE, sg),
        }


def kernel_cases() -> list[Case]:
    """Cases that together launch every kernel instantiation."""
    cases = []
    for dtype in _source.SCALAR_TYPES:
        for k in (3, 8, 12, 20):  # windows 4, 8, 16 and the generic kernels
            cases.append(Case("conv", dtype, k, False, "ATan"))
            cases.append(Case("conv", dtype, k, True, "Sigmoid", (7, 50, 40, 1), 1, True))
            cases.append(Case("stats", dtype, k))
        cases.append(Case("conv", dtype, 4, False, "Erf", (5, 3, 2, 70), 3))
        for steps in (6, 13, 32, 70):  # dense windows 8, 16, 32 and the generic kernels
            cases.append(Case("dense", dtype, shape=(steps, 777)))
    return cases


def _surrogate(name: str):
    from spikingjelly.activation_based import surrogate

    return getattr(surrogate, name)()


def run_case(case: Case, device: torch.device) -> None:
    """Forward and backward on the cupy backend; raises if it disagrees with the torch backend."""
    from spikingjelly_psn import ops

    from . import set_deterministic

    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=g)

    set_deterministic(case.deterministic)
    try:
        results = []
        if case.op == "dense":
            t, m = case.shape
            x, w, b = (
                v.to(case.dtype) for v in (randn(t, m), randn(t, t) / t**0.5, randn(t, 1) / 9)
            )
            grad = randn(t, m).to(case.dtype)
            for backend in ("cupy", "torch"):  # the torch side in fp32, as the kernels sum
                cast = case.dtype if backend == "cupy" else torch.float32
                leaves = [v.detach().to(cast).requires_grad_(True) for v in (x, w, b)]
                s = ops.dense_fire(*leaves, _surrogate(case.surrogate), backend=backend)
                s.backward(grad.to(cast))
                results.append([s.detach(), *(v.grad for v in leaves)])
            spikes_equal = False  # addmm sums in its BLAS's order: spikes differ near threshold
        else:
            T, B, C, S = case.shape
            lag = (case.k - 1) * case.dilation
            x, hist = randn(T, B, C, S).to(case.dtype), randn(lag, B, C, S).to(case.dtype)
            w = randn(C, case.k) * 0.5
            if case.power_of_two:
                w = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs())))
            b = randn(C) * 0.2
            for backend in ("cupy", "torch"):
                xl, wl, bl = (v.detach().clone().requires_grad_(True) for v in (x, w, b))
                if case.op == "stats":
                    mean, var = ops.conv_channel_stats(xl, wl, case.dilation, hist, backend)
                    (mean.sum() + var.sum()).backward()
                    results.append([mean.detach(), var.detach(), xl.grad, wl.grad])
                else:
                    s = ops.causal_conv_fire(
                        xl, wl, bl, case.dilation, _surrogate(case.surrogate), hist,
                        case.power_of_two, backend,
                    )  # fmt: skip
                    s.backward(torch.ones_like(s))
                    results.append([s.detach(), xl.grad, wl.grad, bl.grad])
            spikes_equal = case.op == "conv"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        set_deterministic(False)
    got, want = results
    if spikes_equal and not torch.equal(got[0], want[0]):
        raise AssertionError(f"{case}: spikes differ from the torch backend")
    tol = 1e-3 if case.dtype == torch.float32 else 5e-2
    for a, e in zip(got[1:], want[1:]):
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol, msg=str(case))


def check_kernels(device: torch.device) -> int:
    """Run every case; report which instantiations ran."""
    ran: set[tuple[str, str]] = set()
    launch = _launch.launch

    def recording(module, name, *args, **kwargs):
        ran.add((module, name))
        return launch(module, name, *args, **kwargs)

    _launch.launch = recording
    try:
        for case in kernel_cases():
            run_case(case, device)
    finally:
        _launch.launch = launch
    every = {(m, n) for m in _source.all_modules() for n in _source.module_names(m)}
    print(f"ran {len(ran)} of {len(every)} kernel instantiations; missing: {sorted(every - ran)}")
    return 0 if ran == every else 1


# ---------------------------------------------------------------- attributes, cache


def prefill(device: torch.device, workers: int) -> int:
    """Compile every module for ``device`` into the kernel cache (one process per module)."""
    arch = _launch._arch(device.index or 0)
    modules = _source.all_modules()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        list(pool.map(_prefill_one, modules, [arch] * len(modules)))
    print(f"compiled {len(modules)} modules for {arch}")
    return 0


def _prefill_one(module: _source.Module, arch: str) -> None:
    from . import _compile

    source = _source.assemble(module.filename)
    _compile.cached_program(source, module.filename, _source.module_names(module), arch)


def attributes(device: torch.device, workers: int) -> int:
    """The driver's view of every kernel next to the static report (sm_90 shapes)."""
    import cupy
    from cupy.cuda import driver

    programs = resources.compile_all(_launch._arch(device.index or 0), workers)
    static = {row.name: row for row in resources.rows(programs)}
    print("| kernel | regs (driver) | regs (ptxas) | local B | occupancy (driver, feature map) |")
    print("|---|---|---|---|---|")
    layout = resources.LAYOUTS[0]
    max_warps = torch.cuda.get_device_properties(device).max_threads_per_multi_processor // 32
    bad = 0
    with cupy.cuda.Device(device.index or 0):
        for module in _source.all_modules():
            for name in _source.module_names(module):
                fn = _launch.kernel(module, name, device.index or 0)
                regs = driver.funcGetAttribute(driver.CU_FUNC_ATTRIBUTE_NUM_REGS, fn.ptr)
                local = driver.funcGetAttribute(driver.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn.ptr)
                threads, smem = resources.launch_shape(name, 32, layout)
                blocks = driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.ptr, threads, smem)
                occ = blocks * -(-threads // 32) / max_warps
                bad += regs != static[name].usage.registers or occ < 0.5
                print(
                    f"| `{name}` | {regs} | {static[name].usage.registers} | {local} | {occ:.0%} |"
                )
    print(f"\n{bad} kernels differ from the static report or fall below 50%")
    return 1 if bad else 0


# ---------------------------------------------------------------- power-of-two taps


def _time(fn, repeats: int = 20) -> float:
    """Median milliseconds of fn() between CUDA events, after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _pow2_row(dtype: torch.dtype, device: torch.device) -> dict:
    from spikingjelly_psn import ops

    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(32, 64, 64, 1024, device=device, generator=g).to(dtype)
    w = torch.randn(64, 4, device=device, generator=g)
    w = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs())))
    b = torch.randn(64, device=device, generator=g) * 0.2
    sg = _surrogate("ATan")

    def fire(pow2: bool) -> torch.Tensor:
        return ops.causal_conv_fire(x, w, b, 1, sg, None, pow2, "cupy")

    float_ms, pow2_ms = _time(lambda: fire(False)), _time(lambda: fire(True))
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "float_ms": float_ms,
        "pow2_ms": pow2_ms,
        "ratio": pow2_ms / float_ms,
        "bit_identical": bool(torch.equal(fire(True), fire(False))),
    }


def pow2_check(device: torch.device, out: str | None) -> int:
    """Power-of-two against float taps, forward: MFPSN layout [32, 64, 64, 1024], k = 4."""
    rows = [_pow2_row(dtype, device) for dtype in (torch.float32, torch.float16)]
    for row in rows:
        print(json.dumps(row))
    if out:
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["bit_identical"] and r["ratio"] <= 1.15 for r in rows) else 1


# ---------------------------------------------------------------- speed goals


def _read(paths: Iterable[str]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            with open(path, newline="") as f:
                rows.extend(csv.DictReader(f))
        except OSError:
            continue  # a sweep that did not finish
    return rows


def _rows(paths: Iterable[str]) -> list[dict]:
    return [r for r in _read(paths) if r["status"] == "ok"]


def _merge(paths: Iterable[str], out: str) -> None:
    rows = _read(paths)
    if rows:
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def evaluate_goals(rows: list[dict], pow2: list[dict] | None = None) -> list[tuple[str, str, str]]:
    """(goal, PASS/FAIL/MISSING, detail) for each speed goal, from benchmark rows."""

    def pick(neuron, backend=None, dtype=None, T=None, mode=None, k=None, n=None):
        return [
            r for r in rows
            if r["neuron"] == neuron and (backend is None or r["backend"] == backend)
            and (dtype is None or r["dtype"] == dtype) and (T is None or int(r["T"]) == T)
            and (mode is None or r["mode"] == mode) and (k is None or r["k"] == str(k))
            and (n is None or int(r["n_prime"]) == n)
        ]  # fmt: skip

    def ms(neuron, **kw):
        found = pick(neuron, **kw)
        return min(float(r["median_ms"]) for r in found) if found else None

    goals = []
    plugin = ("psn", "masked", "sliding", "mfpsn")
    n, ts = 2**22, (4, 8, 16, 32, 64)

    def verdict(name, checks):
        checks = list(checks)
        if not checks or any(c is None for _, c in checks):
            missing = [d for d, c in checks if c is None]
            goals.append((name, "MISSING", ", ".join(missing[:6]) or "no rows"))
            return
        failed = [d for d, ok in checks if not ok]
        goals.append(
            (name, "FAIL" if failed else "PASS", ", ".join(failed[:8]) or f"{len(checks)} checks")
        )

    def bw(neuron, dtype, T, mode):
        found = pick(neuron, "cupy", dtype, T, mode, n=n)
        return None if not found else float(found[0]["bw_fraction"]) >= 0.7

    verdict(
        "bandwidth >= 70% of copy (cupy, fp32/fp16, T 4..64, N'=2^22, both modes)",
        ((f"{nr} {dt} T={T} {md}", bw(nr, dt, T, md)) for nr in plugin for dt in ("fp32", "fp16")
         for T in ts for md in ("inference", "training")),
    )  # fmt: skip

    def ratio_le(a, b, limit):
        return None if a is None or b is None else a <= limit * b

    verdict(
        "MFPSN (bn, quantized) training <= 0.5 x SpikingJelly PSN, T 4..64",
        ((f"{dt} T={T}", ratio_le(ms("mfpsn", backend="cupy", dtype=dt, T=T, mode="training", n=n),
                                  ms("sj-psn", dtype=dt, T=T, mode="training", n=n), 0.5))
         for dt in ("fp32", "fp16") for T in ts),
    )  # fmt: skip

    def psn_vs_sj(dt):
        a = pick("psn", "cupy", dt, 32, "training", n=n)
        b = pick("sj-psn", None, dt, 32, "training", n=n)
        if not a or not b:
            return None
        faster = float(a[0]["median_ms"]) * 3 <= float(b[0]["median_ms"])
        smaller = int(a[0]["saved_bytes"]) * 2 <= int(b[0]["saved_bytes"])
        return faster and smaller

    verdict(
        "PSN cupy >= 3x SpikingJelly PSN fwd+bwd at T=32, <= half its saved bytes",
        ((dt, psn_vs_sj(dt)) for dt in ("fp32", "fp16")),
    )
    verdict(
        "every cupy neuron faster than SpikingJelly's fastest LIF at T >= 8",
        ((f"{nr} {dt} T={T} {md}", ratio_le(ms(nr, backend="cupy", dtype=dt, T=T, mode=md, n=n),
                                            ms("lif", dtype=dt, T=T, mode=md, n=n), 1.0))
         for nr in plugin for dt in ("fp32", "fp16") for T in ts[1:]
         for md in ("inference", "training")),
    )  # fmt: skip
    verdict(
        "SlidingPSN cupy >= 10x SpikingJelly SlidingPSN at T=64, k=8",
        ((f"{dt} {md}", ratio_le(ms("sliding", backend="cupy", dtype=dt, T=64, mode=md, k=8),
                                 ms("sj-sliding", dtype=dt, T=64, mode=md, k=8), 0.1))
         for dt in ("fp32", "fp16") for md in ("inference", "training")),
    )  # fmt: skip
    verdict(
        "power-of-two taps within 1.15x of float taps and bit-identical",
        ((r["dtype"], r["ratio"] <= 1.15 and r["bit_identical"]) for r in pow2 or [])
        if pow2
        else [("pow2 check", None)],
    )
    return goals


def goals_command(paths: list[str], pow2_path: str | None, merge: str | None) -> int:
    """Prints each goal's verdict; ``merge``: also writes every row of ``paths`` to one CSV."""
    pow2 = None
    if pow2_path:
        try:
            with open(pow2_path) as f:
                pow2 = json.load(f)
        except OSError:
            pow2 = None
    if merge:
        _merge(paths, merge)
    result = evaluate_goals(_rows(paths), pow2)
    for name, state, detail in result:
        print(f"{state:8s} {name}\n         {detail}")
    return 0 if all(state == "PASS" for _, state, _ in result) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU checks of the cupy backend")
    parser.add_argument("command", choices=["prefill", "kernels", "attributes", "pow2", "goals"])
    parser.add_argument("paths", nargs="*", help="goals: benchmark results.csv files")
    parser.add_argument("--pow2", help="goals: the JSON written by pow2 --out")
    parser.add_argument("--merge", help="goals: write every row of the results to this CSV")
    parser.add_argument("--out", help="pow2: where to write its JSON")
    parser.add_argument("--workers", type=int, default=8, help="prefill, attributes: processes")
    options = parser.parse_intermixed_args(argv)
    if options.command == "goals":
        return goals_command(options.paths, options.pow2, options.merge)
    device = torch.device("cuda", torch.cuda.current_device())
    if options.command == "prefill":
        return prefill(device, options.workers)
    if options.command == "kernels":
        return check_kernels(device)
    if options.command == "attributes":
        return attributes(device, options.workers)
    return pow2_check(device, options.out)


if __name__ == "__main__":
    sys.exit(main())
