"""The GPU validation's parts that need no GPU: its kernel cases launch every instantiation, its
goal verdicts, and the script's plumbing (a run with no time left skips every step and still
returns its summary and archive)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from spikingjelly_psn.ops.cupy import _source, gpu_checks

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_cases_launch_every_instantiation():
    ran = set().union(*(case.specs() for case in gpu_checks.kernel_cases()))
    every = {(m, n) for m in _source.all_modules() for n in _source.module_names(m)}
    assert ran == every


def _row(neuron, backend, dtype, T, mode, ms, bw=0.8, saved=0, k=4, n=2**22):
    return {
        "neuron": neuron, "backend": backend, "dtype": dtype, "T": str(T), "mode": mode,
        "median_ms": str(ms), "bw_fraction": str(bw), "saved_bytes": str(saved), "k": str(k),
        "n_prime": str(n), "status": "ok",
    }  # fmt: skip


def _passing_rows() -> list[dict]:
    rows = []
    for dtype in ("fp32", "fp16"):
        for T in (4, 8, 16, 32, 64):
            for mode in ("inference", "training"):
                for neuron in ("psn", "masked", "sliding", "mfpsn"):
                    rows.append(_row(neuron, "cupy", dtype, T, mode, 1.0, saved=100))
                rows.append(_row("lif", "spikingjelly", dtype, T, mode, 2.0))
                rows.append(_row("sj-psn", "spikingjelly", dtype, T, mode, 4.0, saved=400))
        for mode in ("inference", "training"):
            rows.append(_row("sliding", "cupy", dtype, 64, mode, 1.0, k=8))
            rows.append(_row("sj-sliding", "spikingjelly", dtype, 64, mode, 20.0, k=8))
    return rows


def test_goal_verdicts():
    pow2 = [{"dtype": "float32", "ratio": 1.1, "bit_identical": True}]
    verdicts = gpu_checks.evaluate_goals(_passing_rows(), pow2)
    assert len(verdicts) == 6 and {state for _, state, _ in verdicts} == {"PASS"}
    slow = [
        dict(r, bw_fraction="0.5") if r["neuron"] == "mfpsn" and r["T"] == "64" else r
        for r in _passing_rows()
    ]
    states = {
        name: (state, detail) for name, state, detail in gpu_checks.evaluate_goals(slow, pow2)
    }
    bandwidth = next(v for k, v in states.items() if k.startswith("bandwidth"))
    assert bandwidth[0] == "FAIL" and "mfpsn fp32 T=64" in bandwidth[1]
    missing = gpu_checks.evaluate_goals([r for r in _passing_rows() if r["neuron"] != "lif"])
    assert [state for _, state, _ in missing].count("MISSING") == 2  # LIF rows, pow2 check


def test_goals_command_merges_result_files(tmp_path):
    import csv

    rows = _passing_rows()
    paths = []
    for i, part in enumerate((rows[:10], rows[10:])):
        path = tmp_path / f"r{i}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(part[0]))
            writer.writeheader()
            writer.writerows(part)
        paths.append(str(path))
    merged = tmp_path / "all.csv"
    code = gpu_checks.goals_command([*paths, str(tmp_path / "absent.csv")], None, str(merged))
    assert code == 1  # the pow2 check is missing
    with open(merged, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_validation_script_with_no_time_left_returns_its_summary(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PSN_VALIDATE_BUDGET": "0", "PYTHON": sys.executable,
           "PSN_WHEELS": str(tmp_path / "no-wheels"), "PATH": os.environ["PATH"]}  # fmt: skip
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "validate_gpu.sh"), str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text()
    for name in ("imports", "prefill", "pytest-cuda", "pow2", "bench-fp32", "bench-k8"):
        assert f"SKIPPED  {name} (time budget spent)" in summary
    assert "MISSING" in summary
    files = sorted(p.name for p in out.iterdir())
    assert "validation.tar.gz" in files and len(files) <= 8
    with tarfile.open(out / "validation.tar.gz") as archive:
        assert "./summary.txt" in archive.getnames()
    assert torch.__version__  # the script ran with this interpreter
