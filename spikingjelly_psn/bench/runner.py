"""The sweep: every neuron x backend x dtype x T x N' x mode, timed, sized and counted in bytes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .bytes_model import bytes_moved, passes
from .cases import Case, CaseSpec, Unavailable, backends_for, build, input_shape
from .memory import allocated_bytes, available_bytes, cuda_peak_delta, saved_tensor_bytes
from .timing import Timing, measure, timer_name

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
MODES: tuple[str, ...] = ("inference", "training")
COPY_CAP_BYTES = 1 << 30
ROTATION_BYTES = {"cuda": 256 << 20, "cpu": 32 << 20}
MAX_BUFFERS = 8
COPY_MIN_REPEATS = 30


@dataclass(frozen=True)
class SweepConfig:
    """Everything the sweep varies or fixes."""

    neurons: list[str]
    backends: list[str]
    dtypes: list[str]
    Ts: list[int]
    Ns: list[int]
    modes: list[str]
    k: int
    dilation: int
    channels: int
    mfpsn_threshold: str
    repeats: int
    warmup: int
    device: torch.device
    progress: bool = True


def n_buffers(nbytes: int, device: torch.device) -> int:
    """How many input buffers to rotate so that together they overflow the caches (2 to 8)."""
    target = ROTATION_BYTES["cuda" if device.type == "cuda" else "cpu"]
    return max(2, min(MAX_BUFFERS, math.ceil(target / max(nbytes, 1))))


def _random_buffers(numel: int, count: int, dtype: torch.dtype, device: torch.device):
    """``count`` fresh random vectors (standard normal; random bytes for integer dtypes)."""
    if dtype.is_floating_point:
        return [torch.randn(numel, dtype=dtype, device=device) for _ in range(count)]
    return [torch.randint(0, 256, (numel,), dtype=dtype, device=device) for _ in range(count)]


def plan(cfg: SweepConfig) -> list[tuple[str, int, int, str, str, str]]:
    """Rows to measure, as ``(dtype, T, N', neuron, backend, mode)``, grouped by input shape."""
    return [
        (dtype, T, n, neuron, backend, mode)
        for dtype in cfg.dtypes
        for T in cfg.Ts
        for n in cfg.Ns
        for neuron in cfg.neurons
        for backend in backends_for(neuron, cfg.backends)
        for mode in cfg.modes
    ]


class CopyBaseline:
    """Device-to-device copy bandwidth, measured in this run for each byte count (cached)."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self._gbps: dict[int, float] = {}

    def gbps(self, nbytes_moved: int) -> float:
        """GB/s of ``dst.copy_(src)`` moving ``nbytes_moved`` bytes (half read, half written).

        The ceiling is the fastest of the repeats: what this machine can do at best (contention
        on a shared machine only slows a copy down). Above 2 GiB moved the copy is capped at
        1 GiB each way, where its rate no longer changes.
        """
        size = max(1, min(nbytes_moved // 2, COPY_CAP_BYTES))
        if size not in self._gbps:
            device = self.cfg.device
            srcs = _random_buffers(size, n_buffers(size, device), torch.uint8, device)
            dst = torch.empty_like(srcs[0])
            count = len(srcs)
            timing = measure(
                lambda i: dst.copy_(srcs[i % count]),
                lambda i: None,
                max(self.cfg.repeats, COPY_MIN_REPEATS),
                self.cfg.warmup,
                device,
            )
            self._gbps[size] = 2 * size / (timing.min_ms * 1e-3) / 1e9
            del srcs, dst
        return self._gbps[size]


def _calls(
    case: Case,
    shape: tuple[int, ...],
    mode: str,
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
) -> tuple[Callable[[int], object], Callable[[int], None]]:
    """``call(i)`` runs one inference or training step on rotated input ``i``; ``prepare`` resets."""
    from spikingjelly.activation_based import functional

    module = case.module
    training = mode == "training"
    module.train(training)
    count = len(inputs)
    if training:
        params = [p for p in module.parameters() if p.requires_grad]
        leaves = [x.view(shape).detach().requires_grad_(True) for x in inputs]
        grad_outs = [g.view(shape) for g in grads]

        def call(i: int) -> object:
            x = leaves[i % count]
            out = module(x)
            return torch.autograd.grad(out, [x, *params], grad_outs[i % count], allow_unused=True)

    else:
        views = [x.view(shape) for x in inputs]

        def call(i: int) -> object:
            with torch.no_grad():
                return module(views[i % count])

    def prepare(i: int) -> None:
        functional.reset_net(module)

    return call, prepare


def _measure_row(
    cfg: SweepConfig,
    spec: CaseSpec,
    dtype: str,
    n_prime: int,
    mode: str,
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
    copy: CopyBaseline,
) -> dict[str, object]:
    device = cfg.device
    torch_dtype = DTYPES[dtype]
    case = build(spec, device, torch_dtype)
    shape = input_shape(spec.neuron, spec.T, n_prime, cfg.channels)
    call, prepare = _calls(case, shape, mode, inputs, grads)
    timing: Timing = measure(call, prepare, cfg.repeats, cfg.warmup, device)
    prepare(0)
    peak = cuda_peak_delta(lambda: call(0), device)
    prepare(0)
    saved = saved_tensor_bytes(lambda: call(0))
    prepare(0)
    allocated = allocated_bytes(lambda: call(0), device)
    input_bytes = spec.T * n_prime * torch_dtype.itemsize
    n_passes = passes(spec.neuron, mode, cfg.mfpsn_threshold)
    nbytes = bytes_moved(n_passes, spec.T, n_prime, torch_dtype.itemsize)
    achieved = nbytes / (timing.median_ms * 1e-3) / 1e9
    copy_gbps = copy.gbps(nbytes)
    return {
        "impl": case.impl,
        "k": case.k,
        "dilation": case.dilation,
        "input_shape": "x".join(map(str, shape)),
        "status": "ok",
        "median_ms": timing.median_ms,
        "q1_ms": timing.q1_ms,
        "q3_ms": timing.q3_ms,
        "first_call_ms": timing.first_call_ms,
        "repeats": timing.repeats,
        "passes": n_passes,
        "bytes_moved": nbytes,
        "achieved_gbps": achieved,
        "copy_gbps": copy_gbps,
        "bw_fraction": achieved / copy_gbps,
        "peak_mem_bytes": peak,
        "saved_bytes": saved,
        "alloc_bytes": allocated,
        "alloc_ratio": allocated / input_bytes,
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's and the CPU allocator's out-of-memory errors (the CPU's is a plain RuntimeError)."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _failure(spec: CaseSpec, exc: BaseException) -> dict[str, object]:
    """The status and reason of a row that could not be measured."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, Unavailable):
        return {"status": "unavailable", "reason": message}
    if _is_out_of_memory(exc):
        detail = f": {message}" if isinstance(exc, MemoryError) and message else ""
        return {"status": "oom", "reason": f"out of memory{detail}"}
    if spec.backend == "cupy" and isinstance(exc, (ImportError, NotImplementedError)):
        return {"status": "unavailable", "reason": f"{type(exc).__name__}: {message}"}
    return {"status": "error", "reason": f"{type(exc).__name__}: {message}"}


def add_lif_ratio(rows: list[dict[str, object]]) -> None:
    """``speedup_vs_lif = t_LIF / t_neuron`` for rows whose LIF row (same dtype, T, N', mode) ran."""
    lif = {
        (r["dtype"], r["T"], r["n_prime"], r["mode"]): r["median_ms"]
        for r in rows
        if r["neuron"] == "lif" and r["status"] == "ok"
    }
    for r in rows:
        key = (r["dtype"], r["T"], r["n_prime"], r["mode"])
        if r["status"] == "ok" and key in lif:
            r["speedup_vs_lif"] = lif[key] / r["median_ms"]


def _group_buffers(
    cfg: SweepConfig, dtype: str, T: int, n_prime: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The rotated inputs (and output gradients, when training is swept) of one input shape.

    Sizes that cannot fit raise ``MemoryError`` before allocating: on a CPU an allocation that
    overcommits memory can get the whole process killed, and the sweep with it.
    """
    torch_dtype = DTYPES[dtype]
    numel = T * n_prime
    count = n_buffers(numel * torch_dtype.itemsize, cfg.device)
    sets = 2 if "training" in cfg.modes else 1
    needed = sets * count * numel * torch_dtype.itemsize
    free = available_bytes(cfg.device)
    if free is not None and needed > free:
        raise MemoryError(
            f"the inputs need {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is available"
        )
    inputs = _random_buffers(numel, count, torch_dtype, cfg.device)
    grads = _random_buffers(numel, count, torch_dtype, cfg.device) if sets == 2 else []
    return inputs, grads


def run_sweep(cfg: SweepConfig, info: dict[str, str]) -> list[dict[str, object]]:
    """Measure every planned row; a row that can't run is kept with its status and reason."""
    rows: list[dict[str, object]] = []
    copy = CopyBaseline(cfg)
    todo = plan(cfg)
    group: tuple[str, int, int] | None = None
    group_error: Exception | None = None
    inputs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    with tqdm(total=len(todo), desc="bench", unit="row", disable=not cfg.progress) as bar:
        for dtype, T, n_prime, neuron, backend, mode in todo:
            bar.set_postfix_str(f"{neuron}/{backend} {dtype} T={T} N'={n_prime} {mode}")
            if group != (dtype, T, n_prime):
                group = (dtype, T, n_prime)
                inputs, grads, group_error = [], [], None  # free the previous shape's first
                try:
                    inputs, grads = _group_buffers(cfg, dtype, T, n_prime)
                except Exception as exc:  # every row of this shape fails, the sweep goes on
                    group_error = exc
                    torch.cuda.empty_cache()
            spec = CaseSpec(
                neuron, backend, T, cfg.k, cfg.dilation, cfg.channels, cfg.mfpsn_threshold
            )
            row: dict[str, object] = {
                "neuron": neuron,
                "backend": backend,
                "dtype": dtype,
                "T": T,
                "n_prime": n_prime,
                "mode": mode,
                "timer": timer_name(cfg.device),
                "status": "ok",
                "reason": "",
            }
            if group_error is not None:
                row.update(_failure(spec, group_error))
            else:
                try:
                    row.update(_measure_row(cfg, spec, dtype, n_prime, mode, inputs, grads, copy))
                except Exception as exc:  # a failing row is recorded, the sweep goes on
                    row.update(_failure(spec, exc))
                if row["status"] == "oom":
                    torch.cuda.empty_cache()
            row.update(info)
            rows.append(row)
            bar.update()
    add_lif_ratio(rows)
    return rows
