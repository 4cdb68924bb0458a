"""`spikingjelly-psn bench` when something fails: a row records it, or a message, never a lost sweep."""

from __future__ import annotations

import csv
import errno
from pathlib import Path

import pytest
import torch

from spikingjelly_psn.bench import main, report
from spikingjelly_psn.bench.cases import CaseSpec
from spikingjelly_psn.bench.runner import _failure

SMALL = 4096
HUGE = 1 << 40  # 4 time-steps of fp32: 16 TiB of input, more than any machine has
SWEEP = [
    "--neurons",
    "psn",
    "--backends",
    "torch",
    "--mode",
    "inference",
    "--T",
    "4",
    "--rounds",
    "2",
    "--warmup",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_size_that_does_not_fit_is_a_failed_row_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "bench"
    assert main([*SWEEP, "--N", f"{HUGE},{SMALL}", "--out", str(out)]) == 0
    rows = {int(r["n_prime"]): r for r in _rows(out)}
    assert rows[HUGE]["status"] == "oom"
    assert rows[HUGE]["reason"].startswith("out of memory: the inputs need")
    assert rows[SMALL]["status"] == "ok" and float(rows[SMALL]["median_ms"]) > 0


def test_cpu_allocator_failure_counts_as_out_of_memory():
    spec = CaseSpec("psn", "torch", 4, 4, 1, 64, "bn")
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
    )
    assert _failure(spec, cpu)["status"] == "oom"
    assert _failure(spec, torch.OutOfMemoryError("CUDA out of memory"))["status"] == "oom"
    assert _failure(spec, RuntimeError("shape mismatch"))["status"] == "error"


@pytest.mark.parametrize(
    ("device", "needle"),
    [("cpu:99", "the CPU takes no index"), ("cuda:99", "cuda:99"), ("mps", "only cpu and cuda")],
)
def test_devices_that_do_not_exist_are_refused(tmp_path, capsys, device, needle):
    assert main(["--device", device, "--out", str(tmp_path / "bench")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_sweep(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main([*SWEEP, "--N", str(SMALL), "--out", str(tmp_path / "file" / "bench")]) == 2
    captured = capsys.readouterr()
    assert "--out " in captured.err and "cannot write there" in captured.err
    assert "| neuron |" not in captured.out  # refused before measuring anything


def test_a_write_failure_at_the_end_keeps_the_table_on_screen(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"

    def disk_full(rows, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_csv", disk_full)
    assert main([*SWEEP, "--N", str(SMALL), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "| psn | torch |" in captured.out
    assert f"cannot write {out / 'results.csv'} (No space left on device)" in captured.err
    assert "Traceback" not in captured.err
