"""What the docs promise about reproducibility: same seed and thread count, same run, bit for bit."""

from __future__ import annotations

import json

import pytest
import tiny_run
import torch

from spikingjelly_psn.train.cli import main

TINY = [*tiny_run.TINY, "neuron.k=2", "train.epochs=2", *tiny_run.QUIET, "optim.mixup_alpha=0.2"]
TIMING = ("samples_per_s", "epoch_time_s")


def _run(out, threads: int):
    assert main(["--set", *TINY, "--seed", "5", "--threads", str(threads), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    model = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows], model


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_give_the_same_run(
    tmp_path, restore_threads, state_differences, threads
):
    rows_a, model_a = _run(tmp_path / "a", threads)
    rows_b, model_b = _run(tmp_path / "b", threads)
    assert rows_a == rows_b
    assert state_differences(model_a, model_b) == []
