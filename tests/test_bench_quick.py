"""``spikingjelly-psn bench --quick`` on the CPU: every expected row, sane values, plots."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spikingjelly_psn
from spikingjelly_psn.bench import main
from spikingjelly_psn.bench.caches import ROTATION_FACTOR
from spikingjelly_psn.bench.cases import CONTROL, NEURONS, PLUGIN_BACKENDS, PLUGIN_NEURONS, TWINS
from spikingjelly_psn.bench.cli import QUICK
from spikingjelly_psn.bench.report import COLUMNS

PLOTS = ("time_vs_n", "ratio_vs_lif", "bandwidth_fraction", "memory")
TIME_COLUMNS = ("median_ms", "q1_ms", "q3_ms", "first_call_ms")
#: The control (SpikingJelly's PSN timed twice, interleaved) must read 1: the median over its
#: rows within NOISE_BAND (a biased method, say the first-timed case of a round favoured, fails
#: it), each row within ROW_BAND (a row of 10-microsecond calls moves by 10% on a shared CPU).
NOISE_BAND = (0.9, 1.1)
ROW_BAND = (0.8, 1.25)


def _read(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)


def _expected_keys() -> set[tuple[str, str, str, int, int, str]]:
    keys = set()
    for neuron in NEURONS:
        backends = PLUGIN_BACKENDS if neuron in PLUGIN_NEURONS else ("spikingjelly",)
        for backend in backends:
            for T in QUICK["Ts"]:
                for n in QUICK["Ns"]:
                    for mode in ("inference", "training"):
                        keys.add((neuron, backend, "fp32", T, n, mode))
    return keys


def _check_results(out: Path, device: str = "cpu") -> list[dict[str, str]]:
    rows = _read(out)
    cuda = device.startswith("cuda")
    keys = [
        (r["neuron"], r["backend"], r["dtype"], int(r["T"]), int(r["n_prime"]), r["mode"])
        for r in rows
    ]
    assert len(keys) == len(set(keys)), "duplicate rows"
    assert set(keys) == _expected_keys()
    for r in rows:
        where = f"{r['neuron']}/{r['backend']} T={r['T']} N'={r['n_prime']} {r['mode']}"
        if r["backend"] == "cupy" and r["status"] != "ok" and not cuda:
            assert r["status"] == "unavailable", where
            assert r["reason"], where
            continue
        assert r["status"] == "ok", f"{where}: {r['status']} {r['reason']}"
        for col in TIME_COLUMNS:
            value = float(r[col])
            assert math.isfinite(value) and value > 0, (where, col, value)
        assert float(r["q1_ms"]) <= float(r["median_ms"]) <= float(r["q3_ms"]), where
        assert int(r["rounds"]) == QUICK["rounds"]
        # inputs rotate over more than the last-level cache, by the stated factor
        input_bytes = int(r["T"]) * int(r["n_prime"]) * 4
        assert int(r["rotation_bytes"]) >= min(
            ROTATION_FACTOR * int(r["cache_bytes"]), 2 * input_bytes
        )
        for name in ("speedup_vs_lif", "bw_fraction") + (
            ("time_vs_sj",) if r["neuron"] in TWINS else ()
        ):
            q1, med, q3 = (float(r[name + s]) for s in ("_q1", "", "_q3"))
            assert 0 < q1 <= med <= q3, (where, name, q1, med, q3)
        if r["neuron"] not in TWINS:
            assert r["time_vs_sj"] == "", where
        T, n = int(r["T"]), int(r["n_prime"])
        training = r["mode"] == "training"
        passes = (8 if r["neuron"] == "mfpsn" else 5) if training else 2
        assert int(r["passes"]) == passes, where
        assert int(r["bytes_moved"]) == passes * T * n * 4, where
        assert float(r["achieved_gbps"]) > 0 and float(r["copy_gbps"]) > 0, where
        assert float(r["copy_prealloc_gbps"]) > 0, where
        assert 0 < float(r["bw_fraction"]) <= 1.5, (where, r["bw_fraction"])
        assert float(r["speedup_vs_lif"]) > 0, where
        # every call allocates at least its output
        assert float(r["alloc_ratio"]) >= 1.0 and int(r["alloc_bytes"]) >= T * n * 4, where
        saved = int(r["saved_bytes"])
        if training:
            assert saved >= T * n * 4, where  # at least x is kept for backward
        else:
            assert saved == 0, where
        if cuda:
            assert int(r["peak_mem_bytes"]) > 0, where  # the output at least
            assert r["timer"] == "cuda-events"
        else:
            assert r["peak_mem_bytes"] == "", where  # no CUDA peak on a CPU
            assert r["timer"] == "perf_counter"
        assert int(n) == math.prod(int(d) for d in r["input_shape"].split("x")[1:]), where
    lif = [r for r in rows if r["neuron"] == "lif"]
    assert all(float(r["speedup_vs_lif"]) == 1.0 for r in lif)
    if not cuda:
        assert {r["impl"] for r in lif} == {"torch-reference"}
    for r in rows:
        assert r["torch_version"] == torch.__version__
        assert r["spikingjelly_version"] not in ("", "not installed")
        has_cupy = importlib.util.find_spec("cupy") is not None
        assert (
            r["cupy_version"].startswith("cupy")
            if has_cupy
            else r["cupy_version"] == "not installed"
        )
        assert r["spikingjelly_psn_version"] == spikingjelly_psn.__version__
        assert r["device_name"]
        assert r["device"] == device
        assert r["command"].startswith("spikingjelly-psn bench ")
        assert "--quick" in r["command"]
    for name in PLOTS:
        png = out / f"{name}_fp32.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 10_000, png
    assert (out / "results.md").read_text(encoding="utf-8").startswith("| neuron |")
    return rows


def _check_noise(rows: list[dict[str, str]]) -> None:
    control = [r for r in rows if r["neuron"] == CONTROL]
    assert len(control) == len(QUICK["Ts"]) * len(QUICK["Ns"]) * 2
    for r in control:
        where = f"control T={r['T']} N'={r['n_prime']} {r['mode']}"
        assert ROW_BAND[0] <= float(r["time_vs_sj"]) <= ROW_BAND[1], (where, r["time_vs_sj"])
    overall = statistics.median(float(r["time_vs_sj"]) for r in control)
    assert NOISE_BAND[0] <= overall <= NOISE_BAND[1], overall


def test_quick_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["--quick", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    rows = _check_results(out)
    _check_noise(rows)
    printed = capsys.readouterr().out
    assert "| neuron | backend |" in printed
    assert "LIF baseline: spikingjelly LIFNode(step_mode='m'), implementation" in printed
    cupy_rows = [r for r in rows if r["backend"] == "cupy"]  # a CPU run: never available
    assert cupy_rows and all(r["status"] == "unavailable" for r in cupy_rows)


def test_quick_module_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "spikingjelly_psn.bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bench:" not in proc.stderr  # no progress bar into a file or pipe
    assert "ERROR" not in proc.stderr  # nor the profiler's CUDA probe on a machine with no GPU
    _check_results(out)


@pytest.mark.cuda
def test_quick_on_cuda_every_backend_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["--quick", "--device", "cuda", "--out", str(out), "--no-progress"]) == 0
    rows = _check_results(out, device="cuda")
    assert all(r["status"] == "ok" for r in rows)
