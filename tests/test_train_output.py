"""What a training run shows: progress bars, one accuracy unit everywhere, a titled curve."""

from __future__ import annotations

import io
import json
import re

import pytest
import tiny_run
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spikingjelly_psn.train import checkpoint as ckpt
from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.config import load_config
from spikingjelly_psn.train.dist import DistInfo
from spikingjelly_psn.train.runlog import accuracy_limits
from spikingjelly_psn.train.trainer import Trainer

TINY = [*tiny_run.TINY, "neuron.k=2", "train.epochs=1", "train.plot=false"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, capsys, terminal):
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    args = ["--set", *TINY, "train.tensorboard=false", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert ("\r" in err.getvalue()) == terminal  # a bar redraws its line with carriage returns
    assert "epoch   1/1" in capsys.readouterr().out  # the one line per epoch, either way


def test_accuracy_is_a_percentage_everywhere(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "train.progress=false", "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    console = float(re.search(r"test accuracy: ([\d.]+)%", printed).group(1))
    assert console == pytest.approx(row["test_acc"], abs=0.005)
    assert f"acc {row['train_acc']:6.2f}%" in printed  # the epoch line
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for tag, key in (("test/acc", "test_acc"), ("train/acc", "train_acc")):
        (scalar,) = events.Scalars(tag)
        assert scalar.value == pytest.approx(row[key], rel=1e-6)
    state = ckpt.load(run / "last.pt")
    assert state["best_acc"] == row["test_acc"] and state["history"][0] == row
    # 16 test samples: a percentage is a multiple of 6.25, a fraction would be at most 1
    assert row["test_acc"] % 6.25 == 0 and (row["test_acc"] > 1 or row["test_acc"] == 0)


def test_old_checkpoint_fractions_become_percentages(tmp_path):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "train.progress=false", "--out", str(run)]) == 0
    state = ckpt.load(run / "last.pt")
    old = {k: v for k, v in state.items() if k != "acc_unit"}
    old["best_acc"] = 0.75
    old["history"] = [{**state["history"][0], "train_acc": 0.5, "test_acc": 0.75}]
    ckpt.save_atomic(old, run / "old.pt")
    loaded = ckpt.load(run / "old.pt")
    assert loaded["best_acc"] == 75.0
    assert (loaded["history"][0]["train_acc"], loaded["history"][0]["test_acc"]) == (50.0, 75.0)


def test_learning_curve_title_names_run_neuron_device_and_precision():
    cfg = load_config(None, [*TINY, "name=digits-x", "neuron.name=SlidingPSN"])
    trainer = Trainer(cfg, torch.device("cpu"), DistInfo(), None)
    title = trainer.title()
    for part in ("digits-x", "seq_mlp with SlidingPSN", "digits (T=64)", "cpu: ", "fp32"):
        assert part in title, title


def test_accuracy_axis_shows_the_end_of_the_run():
    history = [
        {"epoch": e, "train_acc": acc, "test_acc": acc - 1}
        for e, acc in enumerate([10.0, 40.0, 80.0, 95.0, 96.0, 97.0, 97.5, 98.0], start=1)
    ]
    low, high = accuracy_limits(history)
    assert 70 < low < 79 and 98 < high <= 101  # epochs 1 and 2 lie below the axis
