"""`spikingjelly-psn train` on a GPU: one short epoch per way of naming the device (GPU only)."""

from __future__ import annotations

import json

import pytest
import torch

from spikingjelly_psn.train.cli import main


def _gpu_ready() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    return bool(cupy.is_available()) and torch.cuda.is_available()


pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _gpu_ready(), reason="needs CuPy with a CUDA GPU (cupy.is_available())"),
]

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
    assert 0.0 <= row["test_acc"] <= 100.0 and row["train_loss"] > 0


def test_amp_epoch_on_the_gpu(tmp_path):
    out = tmp_path / "run"
    args = ["--set", *TINY, "train.amp=bf16", "neuron.backend=cupy", "--out", str(out)]
    assert main([*args, "--device", "cuda"]) == 0
    assert (out / "last.pt").is_file()
