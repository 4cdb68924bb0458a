"""Timing of one call: CUDA events on a GPU, ``perf_counter`` on a CPU; medians, warm-up excluded."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``repeats`` timed calls, and the first (cold) call."""

    median_ms: float
    min_ms: float
    q1_ms: float
    q3_ms: float
    first_call_ms: float
    repeats: int


def timer_name(device: torch.device) -> str:
    """What measures time on ``device``."""
    return "cuda-events" if device.type == "cuda" else "perf_counter"


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall_ms(call: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _timed_ms(
    call: Callable[[int], object],
    prepare: Callable[[int], None],
    repeats: int,
    device: torch.device,
) -> list[float]:
    """Per-call times; ``prepare(i)`` (host-side set-up, e.g. a state reset) runs untimed."""
    if device.type != "cuda":
        times = []
        for i in range(repeats):
            prepare(i)
            start = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - start) * 1e3)
        return times
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    synchronize(device)
    for i in range(repeats):
        prepare(i)
        starts[i].record()
        call(i)
        ends[i].record()
    synchronize(device)
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def measure(
    call: Callable[[int], object],
    prepare: Callable[[int], None],
    repeats: int,
    warmup: int,
    device: torch.device,
) -> Timing:
    """Time ``call(i)`` (``i`` picks the rotated input): first call, warm-up, then ``repeats`` calls.

    The first call (kernel compilation, lazy initialisation) is timed on the wall clock with the
    device synchronised on both sides and reported apart; warm-up calls are not reported.
    """
    prepare(0)
    first = _wall_ms(lambda: call(0), device)
    for i in range(warmup):
        prepare(i)
        call(i)
    times = _timed_ms(call, prepare, repeats, device)
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return Timing(statistics.median(times), min(times), q1, q3, first, len(times))
