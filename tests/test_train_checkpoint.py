"""Checkpoints load safely (weights_only), damage is named, and a damaged last.pt has a way out."""

from __future__ import annotations

import pickle
import random
import struct
import zipfile

import numpy as np
import pytest
import torch

from spikingjelly_psn.train import checkpoint as ckpt
from spikingjelly_psn.train.checkpoint import CheckpointError
from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.config import load_config
from spikingjelly_psn.train.runfolder import claim
from spikingjelly_psn.train.trainer import save_config


class Exploit:
    """Unpickling this creates ``marker``: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(epoch: int = 0, best_epoch: int = 1, **extra) -> dict:
    state = {
        "epoch": epoch,
        "model": {"w": torch.full((3,), float(epoch))},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "scaler": {},
        "rng": ckpt.rng_state(),
        "best_acc": 50.0,
        "best_epoch": best_epoch,
        "acc_unit": ckpt.ACC_UNIT,
        "history": [{"epoch": epoch + 1, "test_acc": 50.0}],
    }
    state.update(extra)
    return state


def test_rng_state_is_plain_data_and_round_trips_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leave cached Gaussians in both states
    ckpt.save_atomic(_state(), tmp_path / "last.pt")
    state = ckpt.load(tmp_path / "last.pt")  # weights_only=True inside
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "owned"
    path = tmp_path / "last.pt"
    torch.save(_state(payload=Exploit(marker)), path)
    torch.load(path, weights_only=False)  # the exploit is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=rf"{path} was not loaded: .*could run code"):
        ckpt.load(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"  # a bare pickle, not an archive
    raw.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(CheckpointError, match=rf"{raw} is truncated or not a checkpoint"):
        ckpt.load(raw)
    assert not marker.exists()


def test_resume_of_a_crafted_checkpoint_runs_no_code_and_names_the_file(tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "owned"
    out.mkdir()
    save_config(load_config(None, ["neuron.k=2"]), out)
    torch.save({"epoch": 0, "model": Exploit(marker)}, out / "last.pt")
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'last.pt'} was not loaded" in err and "no best.pt to fall back on" in err
    assert err.count("\n") == 1 and not marker.exists()


def _flip_a_byte_of_the_first_tensor(path):
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 1] ^= 0xFF  # in the local record
    path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "flipped", "not_a_state"])
def test_damaged_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(), path)
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
        needle = "is empty"
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        needle = "is truncated or not a checkpoint"
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
        needle = "is truncated or not a checkpoint"
    elif damage == "flipped":
        record = _flip_a_byte_of_the_first_tensor(path)
        needle = f"is damaged: its record '{record}' fails the CRC-32 check"
    else:
        torch.save({"weights": torch.ones(2)}, path)
        needle = "is not a training checkpoint of spikingjelly-psn train"
    with pytest.raises(CheckpointError) as err:
        ckpt.load(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value)


def test_damaged_last_falls_back_to_best_or_says_what_to_do(tmp_path):
    ckpt.save_atomic(_state(epoch=1, best_epoch=1), tmp_path / "last.pt")
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="no best.pt to fall back on: restore .* from a backup"
    ):
        ckpt.load_for_resume(tmp_path)
    ckpt.save_atomic(_state(epoch=0, best_epoch=1), tmp_path / "best.pt")
    state, warning = ckpt.load_for_resume(tmp_path)
    assert state["epoch"] == 0
    assert f"{tmp_path / 'last.pt'} is empty" in warning
    assert f"resuming from {tmp_path / 'best.pt'} (epoch 1)" in warning
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="the fallback failed too"):
        ckpt.load_for_resume(tmp_path)


def test_repair_best_after_a_kill_between_the_two_writes(tmp_path):
    ckpt.save_atomic(_state(epoch=0, best_epoch=1), tmp_path / "best.pt")
    last = _state(epoch=2, best_epoch=3)  # epoch 3 was best; its best.pt write never happened
    assert ckpt.repair_best(tmp_path, last)
    assert ckpt.load(tmp_path / "best.pt")["epoch"] == 2
    assert not ckpt.repair_best(tmp_path, last)  # already consistent
    assert not ckpt.repair_best(tmp_path, _state(epoch=3, best_epoch=3))  # best is older


def test_temp_files_of_interrupted_writes_are_removed_on_claim(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last.pt.k2j3.tmp", run / ".best.pt.x.tmp", run / ".config.yaml.a.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (run / "notes.tmp").write_text("mine")
    with claim(run, new_run=True) as removed:
        assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and (run / "notes.tmp").exists()


def test_write_failure_keeps_the_previous_file_and_names_the_target(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(epoch=0), path)

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError) as err:
        ckpt.save_atomic(_state(epoch=1), path)
    assert err.value.filename == str(path)
    monkeypatch.undo()
    assert ckpt.load(path)["epoch"] == 0
    assert not list(tmp_path.glob(".*.tmp"))
