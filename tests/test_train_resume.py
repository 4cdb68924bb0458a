"""A run killed mid-epoch and resumed ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import math

import pytest
import tiny_run
import torch

from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.config import load_config

TINY = [
    *tiny_run.TINY,
    "train.epochs=3",
    "train.progress=false",
    "optim.mixup_alpha=0.2",
    "optim.label_smoothing=0.1",
]


def _weights(run):
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("neuron", ["MFPSN", "MaskedPSN"])
def test_killed_and_resumed_run_matches_uninterrupted(
    tmp_path, neuron, state_differences, interrupt_training, monkeypatch
):
    args = ["--set", *TINY, f"neuron.name={neuron}", "neuron.k=2", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    # 3 batches per epoch: stop in the middle of the second epoch.
    with pytest.raises(interrupt_training(5)):
        main([*args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert _weights(tmp_path / "cut")["epoch"] == 0
    assert main(["--resume", str(tmp_path / "cut")]) == 0

    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert cut["epoch"] == full["epoch"] == 2
    assert state_differences(full["model"], cut["model"]) == []
    assert full["optimizer"]["state"].keys() == cut["optimizer"]["state"].keys()
    for pid, state in full["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(cut["optimizer"]["state"][pid][name])
            )
    rows = [
        json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    if neuron == "MaskedPSN":
        assert [r["lambda"] for r in rows] == [0.0, 1.0, 1.0]
        lambdas = [v for k, v in cut["model"].items() if k.endswith("_lambda_")]
        assert lambdas and all(float(v) == 1.0 for v in lambdas)


def test_run_folder_holds_every_artifact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--set", *TINY, "train.epochs=1", "neuron.k=2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed and "best test accuracy" in printed
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "learning_curve.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert main(["--set", *TINY, "--out", str(out)]) == 2  # refuses to overwrite a run


def test_resume_rejects_new_settings(tmp_path, capsys):
    assert main(["--resume", str(tmp_path), "--set", "optim.lr=1"]) == 2
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no last.pt and config.yaml" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path), "--out", str(tmp_path / "elsewhere")]) == 2
    assert f"--resume {tmp_path} continues the run in its own folder; drop --out" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_compiled_model_trains(tmp_path):
    args = ["--set", *TINY, "train.epochs=1", "neuron.k=2", "train.compile=default"]
    assert main([*args, "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert _weights(tmp_path / "run")["epoch"] == 0


def _files(run):
    """Every file of a run folder, with its bytes."""
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "train.epochs=2", "neuron.k=2", "--out", str(run)]) == 0
    before = _files(run)
    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"{run} has finished its 2 epochs" in printed
    assert f"To train it longer: --resume {run} --epochs N, with N > 2" in printed
    assert "resuming" not in printed and "wall time" not in printed
    assert _files(run) == before  # metrics, plot, TensorBoard events and checkpoints untouched


def test_extend_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "train.epochs=2", "neuron.k=2", "--out", str(run)]) == 0
    assert main(["--resume", str(run), "--epochs", "3"]) == 0
    assert f"{run} now trains 3 epochs instead of 2" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # The cosine schedule now spans 3 epochs: epoch 3 runs at its third value, not at the
    # 2-epoch schedule's end.
    lr = load_config(run / "config.yaml").optim.lr
    assert rows[2]["lr"] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 2 / 3)))
    assert load_config(run / "config.yaml").train.epochs == 3
    assert _weights(run)["epoch"] == 2 and _weights(run)["config"]["train"]["epochs"] == 3


def test_extend_refuses_fewer_epochs_and_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "train.epochs=2", "neuron.k=2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "1"]) == 2
    assert "has already trained 2 epochs; pass more than 2" in capsys.readouterr().err
    assert main(["--resume", str(run), "--set", "train.epochs=3"]) == 2
    assert "to train it longer: --resume DIR --epochs N" in capsys.readouterr().err


def test_epochs_option_of_a_new_run(tmp_path):
    run = tmp_path / "run"
    assert main(["--set", *TINY, "neuron.k=2", "--epochs", "1", "--out", str(run)]) == 0
    assert _weights(run)["epoch"] == 0
