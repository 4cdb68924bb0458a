"""The benchmark's parts: byte model, shapes, timing, memory, options, markdown."""

from __future__ import annotations

import random

import pytest
import torch

from spikingjelly_psn.bench import main
from spikingjelly_psn.bench.bytes_model import bytes_moved, passes
from spikingjelly_psn.bench.caches import (
    ROTATION_FACTOR,
    cpu_last_level_cache_bytes,
    rotation_count,
)
from spikingjelly_psn.bench.cases import mfpsn_shape
from spikingjelly_psn.bench.memory import cuda_peak_delta, saved_tensor_bytes
from spikingjelly_psn.bench.report import markdown_table
from spikingjelly_psn.bench.runner import Contender, SweepConfig, _run_rounds
from spikingjelly_psn.bench.timing import Spread, ratio_spread


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


def test_rotation_overflows_the_cache_by_the_stated_factor() -> None:
    cache = 32 << 20
    for nbytes in (1, 64 << 10, 5 << 20, 1 << 30):
        count = rotation_count(nbytes, cache)
        assert count >= 2
        assert count * nbytes >= ROTATION_FACTOR * cache or count == 2
        assert (count - 1) * nbytes < ROTATION_FACTOR * cache or count == 2


def test_last_level_cache_is_read_from_sysfs(tmp_path) -> None:
    for index, (level, kind, size) in enumerate(
        [
            (1, "Data", "32K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "1024K"),
            (3, "Unified", "32768K"),
        ]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    assert cpu_last_level_cache_bytes(tmp_path) == 32 << 20
    assert cpu_last_level_cache_bytes(tmp_path / "absent") is None


def test_spread_and_per_round_ratios() -> None:
    assert Spread.of([3.0]) == Spread(3.0, 3.0, 3.0)
    s = Spread.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.q1, s.median, s.q3) == (2.0, 3.0, 4.0)
    # a machine twice as slow in round 2 slows both cases: the ratio does not move
    r = ratio_spread([1.0, 2.0, 1.0], [2.0, 4.0, 2.0])
    assert r == Spread(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="rounds"):
        ratio_spread([1.0], [1.0, 2.0])


def _config(rounds: int) -> SweepConfig:
    return SweepConfig(
        neurons=["psn"],
        backends=["torch"],
        dtypes=["fp32"],
        Ts=[4],
        Ns=[64],
        modes=["inference"],
        k=4,
        dilation=1,
        channels=64,
        mfpsn_threshold="bn",
        rounds=rounds,
        warmup=0,
        device=torch.device("cpu"),
    )


def test_rounds_interleave_the_cases_in_shuffled_order() -> None:
    log: list[tuple[str, int]] = []
    prepared: list[tuple[str, int]] = []
    contenders = [
        Contender(lambda i, n=name: log.append((n, i)), lambda i, n=name: prepared.append((n, i)))
        for name in "abcd"
    ]
    _run_rounds(contenders, _config(20), random.Random(0))
    assert prepared == log  # every call prepared, untimed, just before it
    rounds = [log[4 * r : 4 * r + 4] for r in range(20)]
    assert all(sorted(n for n, _ in rnd) == list("abcd") for rnd in rounds)
    assert len({tuple(n for n, _ in rnd) for rnd in rounds}) > 1  # the order changes
    assert [i for _, i in log] == list(range(80))  # each call takes the next buffer
    assert all(len(c.times) == 20 and min(c.times) > 0 for c in contenders)


def test_a_case_that_fails_leaves_the_rounds_and_the_others_go_on() -> None:
    def broken(i: int) -> None:
        if i >= 3:
            raise RuntimeError("boom")

    good = Contender(lambda i: None, lambda i: None)
    bad = Contender(broken, lambda i: None)
    _run_rounds([good, bad], _config(10), random.Random(1))
    assert len(good.times) == 10
    assert isinstance(bad.error, RuntimeError) and len(bad.times) < 10


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
