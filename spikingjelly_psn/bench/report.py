"""Result rows as ``results.csv`` and as a markdown table."""

from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS: tuple[str, ...] = (
    "neuron",
    "backend",
    "impl",
    "dtype",
    "T",
    "n_prime",
    "input_shape",
    "k",
    "dilation",
    "mode",
    "status",
    "reason",
    "median_ms",
    "q1_ms",
    "q3_ms",
    "first_call_ms",
    "rounds",
    "timer",
    "speedup_vs_lif",
    "speedup_vs_lif_q1",
    "speedup_vs_lif_q3",
    "time_vs_sj",
    "time_vs_sj_q1",
    "time_vs_sj_q3",
    "passes",
    "bytes_moved",
    "achieved_gbps",
    "copy_gbps",
    "copy_prealloc_gbps",
    "bw_fraction",
    "bw_fraction_q1",
    "bw_fraction_q3",
    "cache_bytes",
    "rotation_bytes",
    "peak_mem_bytes",
    "saved_bytes",
    "alloc_bytes",
    "alloc_ratio",
    "device",
    "device_name",
    "torch_version",
    "cuda_version",
    "spikingjelly_version",
    "spikingjelly_psn_version",
    "cupy_version",
    "python_version",
    "command",
)


def _cell(value: object) -> object:
    return "" if value is None else value


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    """One line per row, the columns of :data:`COLUMNS` (empty where not applicable)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c)) for c in COLUMNS})


def _num(value: object, fmt: str) -> str:
    if value is None or value == "":
        return ""
    x = float(value)
    return format(x, fmt) if math.isfinite(x) else str(x)


def _mib(value: object) -> str:
    return "" if value in (None, "") else f"{int(value) / 2**20:.2f}"


def markdown_table(rows: list[dict[str, object]]) -> str:
    """A compact table: time, first call, bandwidth, memory, allocations, speed-up over LIF and
    time over SpikingJelly's class of the same name (medians of per-round ratios)."""
    header = (
        "| neuron | backend | impl | dtype | T | N' | mode | median ms | first call ms | GB/s "
        "| of copy | peak MiB | saved MiB | alloc x input | x LIF | time / SJ | status |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        cells = [
            r["neuron"],
            r["backend"],
            _cell(r.get("impl")),
            r["dtype"],
            r["T"],
            r["n_prime"],
            r["mode"],
            _num(r.get("median_ms"), ".4g"),
            _num(r.get("first_call_ms"), ".4g"),
            _num(r.get("achieved_gbps"), ".3g"),
            _num(r.get("bw_fraction"), ".1%"),
            _mib(r.get("peak_mem_bytes")),
            _mib(r.get("saved_bytes")),
            _num(r.get("alloc_ratio"), ".3g"),
            _num(r.get("speedup_vs_lif"), ".3g"),
            _num(r.get("time_vs_sj"), ".3g"),
            str(status).replace("|", "/"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
