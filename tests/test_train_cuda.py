"""`spikingjelly-psn train` on a GPU: one short epoch per way of naming the device (GPU only)."""

from __future__ import annotations

import json

import pytest

from spikingjelly_psn.train.cli import main

pytestmark = pytest.mark.cuda  # skipped without a GPU (conftest.py)

TINY = [
    "data.limit_train=128",
    "data.limit_test=64",
    "data.batch_size=32",
    "model.channels=16",
    "model.layers=2",
    "neuron.k=4",
    "train.epochs=1",
    "train.tensorboard=false",
]


@pytest.mark.parametrize("device", [None, "auto", "cuda", "cuda:0"])
@pytest.mark.parametrize("backend", ["torch", "cupy"])
def test_one_epoch_on_the_gpu(tmp_path, capsys, device, backend):
    out = tmp_path / "run"
    option = [] if device is None else ["--device", device]
    args = ["--set", *TINY, f"neuron.backend={backend}", "--out", str(out), *option]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "cuda:0" in printed  # the summary names the device the run used
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # a percentage of the 64 test samples, not a fraction
    assert row["test_acc"] % (100 / 64) == 0 and row["train_loss"] > 0
    assert row["test_acc"] == 0 or row["test_acc"] >= 100 / 64


def test_amp_epoch_on_the_gpu(tmp_path):
    out = tmp_path / "run"
    args = ["--set", *TINY, "train.amp=bf16", "neuron.backend=cupy", "--out", str(out)]
    assert main([*args, "--device", "cuda"]) == 0
    assert (out / "last.pt").is_file()
