"""DDP through torchrun: two CPU processes with the gloo backend on a tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "spikingjelly_psn.train",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--set",
        "data.limit_train=64",
        "data.limit_test=32",
        "data.batch_size=16",
        "model.channels=8",
        "model.layers=2",
        "neuron.k=2",
        "train.epochs=2",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # rank 0 alone logs
    assert proc.stdout.count("test accuracy:") == 1
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    # Each rank saw half of the 64 training samples per epoch, evaluation covered all 32.
    assert state["epoch"] == 1 and rows[-1]["test_acc"] % (100 / 32) == 0
    assert not list(out.glob("*.tmp"))
