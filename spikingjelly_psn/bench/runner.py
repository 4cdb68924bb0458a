"""The sweep: every neuron x backend x dtype x T x N' x mode, timed in interleaved rounds.

The cases of one group (dtype, T, N', mode), together with copy ceilings of the same byte
counts, run once per round in a shuffled order, for many rounds. Ratios between cases (over LIF,
over SpikingJelly's class of the same name, over the copy) are taken inside each round, so drift
of a shared machine between rounds cancels, and reported as the median and quartiles of the
per-round ratios.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from spikingjelly_psn.ops import backends

from .bytes_model import bytes_moved, passes
from .caches import last_level_cache_bytes, rotation_count
from .cases import (
    BASELINE_BACKEND,
    TWINS,
    Case,
    CaseSpec,
    Unavailable,
    backends_for,
    build,
    input_shape,
)
from .memory import allocated_bytes, available_bytes, cuda_peak_delta, saved_tensor_bytes
from .timing import Spread, call_ms, ratio_spread, timer_name, wall_ms

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
MODES: tuple[str, ...] = ("inference", "training")
#: A copy ceiling moves at most this many bytes each way; above it the copy rate no longer changes.
COPY_CAP_BYTES = 1 << 30

Call = Callable[[int], object]


@dataclass(frozen=True)
class SweepConfig:
    """Everything the sweep varies or fixes; ``rounds`` timed calls per case."""

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
    rounds: int
    warmup: int
    device: torch.device
    progress: bool = True
    seed: int = 0


@dataclass
class Contender:
    """One thing timed in every round: a neuron case or a copy ceiling."""

    call: Call
    prepare: Callable[[int], None]
    times: list[float] = field(default_factory=list)
    error: Exception | None = None


@dataclass(frozen=True)
class Group:
    """The cases that share one input: a (dtype, T, N', mode)."""

    dtype: str
    T: int
    n_prime: int
    mode: str


def groups(cfg: SweepConfig) -> list[Group]:
    """The groups of the sweep, in the order they run."""
    return [
        Group(dtype, T, n, mode)
        for dtype in cfg.dtypes
        for T in cfg.Ts
        for n in cfg.Ns
        for mode in cfg.modes
    ]


def pairs(cfg: SweepConfig) -> list[tuple[str, str]]:
    """The ``(neuron, backend)`` cases of every group."""
    return [
        (neuron, backend)
        for neuron in cfg.neurons
        for backend in backends_for(neuron, cfg.backends)
    ]


def _random_buffers(numel: int, count: int, dtype: torch.dtype, device: torch.device):
    """``count`` fresh random vectors (standard normal; random bytes for integer dtypes)."""
    if dtype.is_floating_point:
        return [torch.randn(numel, dtype=dtype, device=device) for _ in range(count)]
    return [torch.randint(0, 256, (numel,), dtype=dtype, device=device) for _ in range(count)]


def _check_fits(needed: int, device: torch.device, what: str) -> None:
    """Raise ``MemoryError`` before allocating what cannot fit: on a CPU an overcommitted
    allocation can get the whole process killed, and the sweep with it."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise MemoryError(
            f"{what} need {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is available"
        )


def _group_buffers(
    cfg: SweepConfig, group: Group, cache_bytes: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The rotated inputs (and output gradients in training) of one group."""
    torch_dtype = DTYPES[group.dtype]
    numel = group.T * group.n_prime
    count = rotation_count(numel * torch_dtype.itemsize, cache_bytes)
    sets = 2 if group.mode == "training" else 1
    _check_fits(sets * count * numel * torch_dtype.itemsize, cfg.device, "the inputs")
    inputs = _random_buffers(numel, count, torch_dtype, cfg.device)
    grads = _random_buffers(numel, count, torch_dtype, cfg.device) if sets == 2 else []
    return inputs, grads


def _calls(
    case: Case,
    shape: tuple[int, ...],
    mode: str,
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
) -> tuple[Call, Callable[[int], None]]:
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


def _no_prepare(i: int) -> None:
    return None


def copy_size(moved: int) -> int:
    """Bytes a copy ceiling reads (and writes) for a case that moves ``moved`` bytes."""
    return max(1, min(moved // 2, COPY_CAP_BYTES))


class Ceiling:
    """Copies of ``size`` bytes (read once, written once), as contenders in the rounds.

    ``allocating`` clones the source, paying for a fresh output as a neuron does;
    ``preallocated`` writes into one buffer kept for the whole group.
    """

    def __init__(self, size: int, cache_bytes: int, device: torch.device) -> None:
        count = rotation_count(size, cache_bytes)
        _check_fits((count + 2) * size, device, "the copy ceiling's buffers")
        srcs = _random_buffers(size, count, torch.uint8, device)
        dst = torch.empty_like(srcs[0])
        self.bytes = 2 * size
        self.allocating = Contender(lambda i: srcs[i % count].clone(), _no_prepare)
        self.preallocated = Contender(lambda i: dst.copy_(srcs[i % count]), _no_prepare)

    def contenders(self) -> list[Contender]:
        return [self.allocating, self.preallocated]


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
    optional = spec.backend != backends.default()
    if optional and isinstance(exc, (ImportError, NotImplementedError)):
        return {"status": "unavailable", "reason": f"{type(exc).__name__}: {message}"}
    return {"status": "error", "reason": f"{type(exc).__name__}: {message}"}


def _prepare_case(
    cfg: SweepConfig,
    spec: CaseSpec,
    group: Group,
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
) -> tuple[Contender, dict[str, object]]:
    """Build a case, time its first call, warm it up and measure its memory (all untimed rounds)."""
    device = cfg.device
    torch_dtype = DTYPES[group.dtype]
    case = build(spec, device, torch_dtype)
    shape = input_shape(spec.neuron, spec.T, group.n_prime, cfg.channels)
    call, prepare = _calls(case, shape, group.mode, inputs, grads)
    prepare(0)
    first = wall_ms(lambda: call(0), device)
    for i in range(cfg.warmup):
        prepare(i)
        call(i)
    prepare(0)
    peak = cuda_peak_delta(lambda: call(0), device)
    prepare(0)
    saved = saved_tensor_bytes(lambda: call(0))
    prepare(0)
    allocated = allocated_bytes(lambda: call(0), device)
    input_bytes = spec.T * group.n_prime * torch_dtype.itemsize
    n_passes = passes(spec.neuron, group.mode, cfg.mfpsn_threshold)
    row = {
        "impl": case.impl,
        "k": case.k,
        "dilation": case.dilation,
        "input_shape": "x".join(map(str, shape)),
        "first_call_ms": first,
        "passes": n_passes,
        "bytes_moved": bytes_moved(n_passes, spec.T, group.n_prime, torch_dtype.itemsize),
        "peak_mem_bytes": peak,
        "saved_bytes": saved,
        "alloc_bytes": allocated,
        "alloc_ratio": allocated / input_bytes,
    }
    return Contender(call, prepare), row


def _run_rounds(contenders: list[Contender], cfg: SweepConfig, rng: random.Random) -> None:
    """``cfg.rounds`` rounds; each runs every contender once, in a fresh random order.

    Every call takes the next rotated buffer, so no two consecutive calls read the same input.
    A contender that fails leaves the rounds with its error; the others go on.
    """
    order = list(contenders)
    i = 0
    for _ in range(cfg.rounds):
        rng.shuffle(order)
        for c in order:
            if c.error is not None:
                continue
            try:
                c.prepare(i)
                c.times.append(call_ms(lambda c=c, i=i: c.call(i), cfg.device))
            except Exception as exc:  # recorded in the row; the other cases keep their rounds
                c.error = exc
                if _is_out_of_memory(exc):
                    torch.cuda.empty_cache()
            i += 1


def _spread_columns(name: str, spread: Spread) -> dict[str, float]:
    return {name: spread.median, f"{name}_q1": spread.q1, f"{name}_q3": spread.q3}


def _gbps(nbytes: int, times_ms: list[float]) -> list[float]:
    return [nbytes / (t * 1e-3) / 1e9 for t in times_ms]


def _timing_columns(
    row: dict[str, object], timed: Contender, ceiling: Ceiling | None
) -> dict[str, object]:
    spread = Spread.of(timed.times)
    columns: dict[str, object] = {
        "median_ms": spread.median,
        "q1_ms": spread.q1,
        "q3_ms": spread.q3,
        "rounds": len(timed.times),
    }
    nbytes = int(row["bytes_moved"])
    achieved = _gbps(nbytes, timed.times)
    columns["achieved_gbps"] = Spread.of(achieved).median
    if ceiling is not None:
        copy = _gbps(ceiling.bytes, ceiling.allocating.times)
        columns["copy_gbps"] = Spread.of(copy).median
        columns["copy_prealloc_gbps"] = Spread.of(
            _gbps(ceiling.bytes, ceiling.preallocated.times)
        ).median
        columns.update(_spread_columns("bw_fraction", ratio_spread(achieved, copy)))
    return columns


def _relative_columns(
    neuron: str, backend: str, timed: Contender, by_key: dict[tuple[str, str], Contender]
) -> dict[str, object]:
    """Per-round ratios against LIF and against SpikingJelly's class of the same name."""
    columns: dict[str, object] = {}
    lif = by_key.get(("lif", BASELINE_BACKEND))
    if lif is not None:
        columns.update(_spread_columns("speedup_vs_lif", ratio_spread(lif.times, timed.times)))
    twin = by_key.get((TWINS[neuron], BASELINE_BACKEND)) if neuron in TWINS else None
    if twin is not None:
        columns.update(_spread_columns("time_vs_sj", ratio_spread(timed.times, twin.times)))
    return columns


def _run_group(
    cfg: SweepConfig, group: Group, cache_bytes: int, rng: random.Random, bar: tqdm
) -> list[dict[str, object]]:
    specs = pairs(cfg)
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for neuron, backend in specs:
        rows[(neuron, backend)] = {
            "neuron": neuron,
            "backend": backend,
            "dtype": group.dtype,
            "T": group.T,
            "n_prime": group.n_prime,
            "mode": group.mode,
            "timer": timer_name(cfg.device),
            "status": "ok",
            "reason": "",
            "cache_bytes": cache_bytes,
        }

    def spec_of(neuron: str, backend: str) -> CaseSpec:
        return CaseSpec(
            neuron, backend, group.T, cfg.k, cfg.dilation, cfg.channels, cfg.mfpsn_threshold
        )

    try:
        inputs, grads = _group_buffers(cfg, group, cache_bytes)
    except Exception as exc:  # every row of this group fails, the sweep goes on
        torch.cuda.empty_cache()
        for (neuron, backend), row in rows.items():
            row.update(_failure(spec_of(neuron, backend), exc))
        bar.update(len(rows))
        return list(rows.values())
    rotation = sum(t.nbytes for t in inputs)
    contenders: dict[tuple[str, str], Contender] = {}
    for neuron, backend in specs:
        bar.set_postfix_str(
            f"{neuron}/{backend} {group.dtype} T={group.T} N'={group.n_prime} {group.mode}"
        )
        row = rows[(neuron, backend)]
        row["rotation_bytes"] = rotation
        try:
            contenders[(neuron, backend)], measured = _prepare_case(
                cfg, spec_of(neuron, backend), group, inputs, grads
            )
            row.update(measured)
        except Exception as exc:  # a failing row is recorded, the sweep goes on
            row.update(_failure(spec_of(neuron, backend), exc))
            if row["status"] == "oom":
                torch.cuda.empty_cache()
    ceilings: dict[int, Ceiling] = {}  # by the bytes a copy moves: capped sizes share one
    for key in contenders:
        size = copy_size(int(rows[key]["bytes_moved"]))
        if size not in ceilings:
            try:
                ceilings[size] = Ceiling(size, cache_bytes, cfg.device)
            except Exception as exc:  # no ceiling: the rows keep their times, no bw_fraction
                if not _is_out_of_memory(exc):
                    raise
                torch.cuda.empty_cache()
    timed = list(contenders.values()) + [c for ceil in ceilings.values() for c in ceil.contenders()]
    _run_rounds(timed, cfg, rng)
    survivors = {key: c for key, c in contenders.items() if c.error is None}
    for key, contender in contenders.items():
        row = rows[key]
        if contender.error is not None:
            row.update(_failure(spec_of(*key), contender.error))
            continue
        ceiling = ceilings.get(copy_size(int(row["bytes_moved"])))
        if ceiling is not None and any(c.error for c in ceiling.contenders()):
            ceiling = None
        row.update(_timing_columns(row, contender, ceiling))
        row.update(_relative_columns(*key, contender, survivors))
    bar.update(len(rows))
    return list(rows.values())


def run_sweep(cfg: SweepConfig, info: dict[str, str]) -> list[dict[str, object]]:
    """Measure every planned row; a row that can't run is kept with its status and reason."""
    rows: list[dict[str, object]] = []
    cache_bytes = last_level_cache_bytes(cfg.device)
    rng = random.Random(cfg.seed)
    with tqdm(
        total=len(groups(cfg)) * len(pairs(cfg)),
        desc="bench",
        unit="row",
        disable=None if cfg.progress else True,
    ) as bar:
        for group in groups(cfg):
            for row in _run_group(cfg, group, cache_bytes, rng, bar):
                row.update(info)
                rows.append(row)
    return rows
