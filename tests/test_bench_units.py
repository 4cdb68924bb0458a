"""The benchmark's parts: byte model, shapes, timing, memory, options, markdown."""

from __future__ import annotations

import pytest
import torch

from spikingjelly_psn.bench import main
from spikingjelly_psn.bench.bytes_model import bytes_moved, passes
from spikingjelly_psn.bench.cases import mfpsn_shape
from spikingjelly_psn.bench.memory import cuda_peak_delta, saved_tensor_bytes
from spikingjelly_psn.bench.report import markdown_table
from spikingjelly_psn.bench.runner import n_buffers
from spikingjelly_psn.bench.timing import measure


def test_pass_counts_follow_the_design() -> None:
    for neuron in ("psn", "masked", "sliding", "sj-psn", "lif"):
        assert passes(neuron, "inference") == 2
        assert passes(neuron, "training") == 5
    assert passes("mfpsn", "inference", "bn") == 2
    assert passes("mfpsn", "training", "bn") == 8
    assert passes("mfpsn", "training", "learnable") == 5
    assert bytes_moved(5, 8, 1024, 2) == 5 * 8 * 1024 * 2
    with pytest.raises(ValueError):
        passes("psn", "both")


@pytest.mark.parametrize(
    ("n_prime", "shape"),
    [
        (4096, (4, 1, 64, 8, 8)),
        (1 << 16, (4, 1, 64, 32, 32)),
        (1 << 20, (4, 16, 64, 32, 32)),
        (64 * 3, (4, 3, 64)),
        (64 * 12, (4, 3, 64, 2, 2)),
    ],
)
def test_mfpsn_shape_holds_n_prime(n_prime: int, shape: tuple[int, ...]) -> None:
    assert mfpsn_shape(4, n_prime, 64) == shape
    with pytest.raises(ValueError, match="multiple"):
        mfpsn_shape(4, n_prime + 1, 64)


def test_rotation_buffers_are_bounded() -> None:
    cpu = torch.device("cpu")
    assert n_buffers(1, cpu) == 8
    assert n_buffers(1 << 40, cpu) == 2


def test_measure_excludes_first_call_and_warmup() -> None:
    calls: list[int] = []
    prepared: list[int] = []
    timing = measure(calls.append, prepared.append, repeats=7, warmup=3, device=torch.device("cpu"))
    assert len(calls) == 1 + 3 + 7 and len(prepared) == len(calls)
    assert calls[-7:] == list(range(7))
    assert timing.repeats == 7
    assert 0 <= timing.min_ms <= timing.q1_ms <= timing.median_ms <= timing.q3_ms
    assert timing.first_call_ms >= 0


def test_saved_tensor_bytes_counts_each_storage_once() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    assert saved_tensor_bytes(lambda: (x * x).sum()) == x.numel() * 4
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: (x * x).sum()) == 0
    assert cuda_peak_delta(lambda: x * 2, torch.device("cpu")) is None


def test_markdown_table_has_one_line_per_row() -> None:
    rows = [
        {
            "neuron": "psn",
            "backend": "torch",
            "dtype": "fp32",
            "T": 4,
            "n_prime": 64,
            "mode": "inference",
            "status": "ok",
            "median_ms": 0.5,
            "bw_fraction": 0.25,
        },
        {
            "neuron": "psn",
            "backend": "cupy",
            "dtype": "fp32",
            "T": 4,
            "n_prime": 64,
            "mode": "inference",
            "status": "unavailable",
            "reason": "no GPU | none",
        },
    ]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "25.0%" in lines[2] and "unavailable: no GPU / none" in lines[3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--neurons", "psn,foo"], "unknown value 'foo'"),
        (["--backends", "triton"], "unknown value 'triton'"),
        (["--dtypes", "fp8"], "unknown value 'fp8'"),
        (["--T", "0"], "positive integers"),
        (["--N", "4096,abc"], "comma-separated integers"),
        (["--k", "0"], "positive integer"),
        (["--mode", "fast"], "invalid choice"),
        (["--neurons", "mfpsn", "--N", "1000"], "multiple of --channels 64"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], message: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--quick" in capsys.readouterr().out
