"""Timing of single calls and the statistics of many rounds: medians, quartiles, per-round ratios.

A GPU call sits between two CUDA events and is synchronised on its own, so one case's queued work
never lands in the next case's time; a CPU call sits between two ``perf_counter`` reads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Spread:
    """Median and quartiles of a sample (times in ms, or ratios)."""

    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The median and quartiles of ``values`` (inclusive method; one value is its own)."""
        if not values:
            raise ValueError("no values to summarise")
        if len(values) == 1:
            return cls(values[0], values[0], values[0])
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3)


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The spread of ``numerators[r] / denominators[r]`` over rounds ``r``.

    Both times come from the same round, so drift of the machine between rounds cancels.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} rounds against {len(denominators)}")
    return Spread.of([a / b for a, b in zip(numerators, denominators) if b > 0])


def timer_name(device: torch.device) -> str:
    """What measures time on ``device``."""
    return "cuda-events" if device.type == "cuda" else "perf_counter"


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(call: Callable[[], object], device: torch.device) -> float:
    """Wall-clock milliseconds of ``call()``, the device synchronised on both sides (cold calls)."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def call_ms(call: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one warm ``call()``: CUDA events on a GPU, ``perf_counter`` on a CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e3
    begin = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    synchronize(device)
    begin.record()
    call()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end)
