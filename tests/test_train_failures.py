"""`spikingjelly-psn train` when things go wrong: a message and the right exit status, nothing lost."""

from __future__ import annotations

import errno
import json
import pathlib

import pytest
import tiny_run
import torch

from spikingjelly_psn.train import checkpoint as ckpt
from spikingjelly_psn.train import steps
from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.runfolder import claim
from spikingjelly_psn.train.steps import nonfinite_tensors

# 48 samples in batches of 16: 3 batches per epoch.
TINY = [*tiny_run.TINY, "neuron.k=2", *tiny_run.QUIET]


def _run(out, *extra):
    return main(["--set", *TINY, *extra, "--out", str(out)])


def _epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _nan_loss_in_batches(monkeypatch, batches):
    """Make the training loss NaN in the given (1-based, counted over the run) batches."""
    real, calls = steps.loss_fn, [0]

    def loss_fn(out, target, optim, train):
        loss = real(out, target, optim, train=train)
        if train:
            calls[0] += 1
            if calls[0] in batches:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(steps, "loss_fn", loss_fn)


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    _nan_loss_in_batches(monkeypatch, {5})  # epoch 2, batch 2
    out = tmp_path / "run"
    assert _run(out, "train.epochs=3") == 1
    err = capsys.readouterr().err
    assert "training diverged: the training loss is not finite in batch 2 of epoch 2" in err
    assert f"{out / 'last.pt'} (epoch 1) is the last good checkpoint" in err
    assert "Traceback" not in err and err.count("\n") == 1
    state = ckpt.load(out / "last.pt")
    assert state["epoch"] == 0 and not any(
        not torch.isfinite(v).all()
        for v in state["model"].values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()  # MFPSN adds a dict
    )
    assert _epochs(out) == [1]


def test_patience_skips_isolated_nonfinite_batches(tmp_path, monkeypatch):
    _nan_loss_in_batches(monkeypatch, {5})
    out = tmp_path / "run"
    assert _run(out, "train.epochs=2", "train.nonfinite_patience=1") == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_batches", 0) for r in rows] == [0, 1]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)


def test_nonfinite_weights_are_named():
    net = torch.nn.BatchNorm1d(2)
    assert nonfinite_tensors(net) == []
    net.running_var[0] = float("inf")
    assert nonfinite_tensors(net) == ["running_var"]


class Killed(RuntimeError):
    """A kill at a chosen point of the run."""


def test_best_pt_is_repaired_after_a_kill_between_the_last_and_best_writes(
    tmp_path, monkeypatch, capsys, state_differences
):
    real = ckpt.save_atomic

    def killed_before_best(obj, path):
        if pathlib.Path(path).name == "best.pt":
            raise Killed("killed between the last.pt and best.pt writes")
        real(obj, path)

    monkeypatch.setattr(ckpt, "save_atomic", killed_before_best)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        _run(out, "train.epochs=1")
    monkeypatch.undo()
    assert ckpt.load(out / "last.pt")["best_epoch"] == 1 and not (out / "best.pt").exists()
    assert main(["--resume", str(out)]) == 0
    assert f"rewrote {out / 'best.pt'} with the best epoch, 1" in capsys.readouterr().out
    best, last = ckpt.load(out / "best.pt"), ckpt.load(out / "last.pt")
    assert best["epoch"] + 1 == last["best_epoch"] == 1
    assert state_differences(last["model"], best["model"]) == []


def test_damaged_last_pt_resumes_from_best_pt_exactly(tmp_path, capsys, state_differences):
    out = tmp_path / "run"
    assert _run(out, "train.epochs=2", "--seed", "1") == 0
    finished = ckpt.load(out / "last.pt")
    best_epoch = ckpt.load(out / "best.pt")["epoch"]
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])  # truncated copy
    orphan = out / ".last.pt.k2j3abcd.tmp"  # what a kill -9 during a write leaves
    orphan.write_bytes(b"partial")
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {out / 'last.pt'} is truncated or not a checkpoint" in captured.err
    assert f"resuming from {out / 'best.pt'} (epoch {best_epoch + 1})" in captured.err
    assert "removed 1 temporary file(s)" in captured.out and not orphan.exists()
    resumed = ckpt.load(out / "last.pt")
    assert resumed["epoch"] == 1 and _epochs(out) == [1, 2]
    assert state_differences(finished["model"], resumed["model"]) == []


def test_a_run_folder_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with claim(out, new_run=True):
        assert _run(out, "train.epochs=1") == 2
        assert f"run folder {out} is in use by another run" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()


def test_disk_full_is_a_message_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    def disk_full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    out = tmp_path / "run"
    assert _run(out, "train.epochs=1") == 1
    err = capsys.readouterr().err
    assert f"No space left on device ({out / 'last.pt'}); free some space" in err
    assert "Traceback" not in err
    assert not list(out.glob(".*.tmp"))


def test_read_only_output_folder_is_a_message(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro" / "run"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert _run(out, "train.epochs=1") == 2
    err = capsys.readouterr().err
    assert f"cannot write to the run folder {out} (Permission denied)" in err


def test_output_below_a_file_is_a_message(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert _run(tmp_path / "file" / "run", "train.epochs=1") == 2
    assert "cannot write to the run folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "needle"),
    [("cpu:99", "the CPU takes no index"), ("tpu", "is not a device"), ("meta", "only cpu")],
)
def test_devices_that_do_not_exist_are_refused(tmp_path, capsys, device, needle):
    assert _run(tmp_path / "run", "--device", device) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
