"""What a training run takes from the machine: device (CUDA mocked here), CPU threads, workers."""

from __future__ import annotations

import re

import pytest
import torch

from spikingjelly_psn.train import dist, machine
from spikingjelly_psn.train.cli import main
from spikingjelly_psn.train.config import ConfigError, load_config
from spikingjelly_psn.train.dist import DistInfo
from spikingjelly_psn.train.trainer import Trainer


@pytest.fixture
def two_gpus(monkeypatch):
    """CUDA reported available with two devices; returns the devices ``set_device`` received."""
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


@pytest.mark.parametrize(
    ("name", "local_rank", "world", "expected"),
    [
        ("cuda", 0, 1, "cuda:0"),
        ("auto", 0, 1, "cuda:0"),
        ("cuda:1", 0, 1, "cuda:1"),
        ("cuda", 1, 2, "cuda:1"),  # torchrun: GPU LOCAL_RANK
        ("auto", 1, 2, "cuda:1"),
        ("cpu", 1, 2, "cpu"),
    ],
)
def test_device_with_cuda(two_gpus, name, local_rank, world, expected):
    device = machine.resolve_device(name, local_rank, world)
    assert device == torch.device(expected)
    assert two_gpus == ([] if expected == "cpu" else [device])
    assert device.type == "cpu" or device.index is not None  # set_device needs an index


@pytest.mark.parametrize(
    ("name", "local_rank", "world", "message"),
    [
        ("cuda:1", 0, 2, "under torchrun each process takes GPU LOCAL_RANK"),
        ("cuda", 2, 3, "LOCAL_RANK=2 but this machine has 2 CUDA device(s)"),
        ("cuda:2", 0, 1, "this machine has 2 CUDA device(s)"),
        ("mps", 0, 1, "only cpu and cuda are supported"),
    ],
)
def test_device_errors_with_cuda(two_gpus, name, local_rank, world, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        machine.resolve_device(name, local_rank, world)
    assert two_gpus == []


def test_auto_without_cuda_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        machine.resolve_device("cuda")


@pytest.mark.parametrize(("device", "backend"), [("cuda:1", "nccl"), ("cpu", "gloo")])
def test_process_group_backend_follows_the_resolved_device(monkeypatch, device, backend):
    joined: list[str] = []
    monkeypatch.setattr(dist.tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.tdist, "init_process_group", lambda backend: joined.append(backend))
    dist.init_distributed(DistInfo(rank=1, world=2, local_rank=1), torch.device(device))
    assert joined == [backend]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


DRY = ["--dry-run", "--set", "model.channels=8", "model.layers=2", "neuron.k=2"]


@pytest.mark.parametrize(
    ("extra", "omp", "threads"),
    [([], None, 1), (["--threads", "2"], None, 2), ([], "2", None)],
    ids=["default", "--threads", "OMP_NUM_THREADS"],
)
def test_cpu_threads(restore_threads, monkeypatch, extra, omp, threads):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    torch.set_num_threads(3)  # what PyTorch would pick on its own, stands for "untouched"
    assert main([*DRY, "--device", "cpu", *extra]) == 0
    assert torch.get_num_threads() == (3 if threads is None else threads)


def test_default_threads_leave_a_gpu_run_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert machine.default_threads(torch.device("cpu")) == 1
    assert machine.default_threads(torch.device("cuda", 0)) is None


@pytest.mark.parametrize(
    ("cpus", "local_world", "asked", "expected"),
    [(2, 1, 4, 2), (8, 2, 8, 4), (2, 1, 1, 1), (1, 2, 3, 0)],
)
def test_workers_clamped_to_the_cpus(monkeypatch, cpus, local_world, asked, expected):
    monkeypatch.setattr(machine, "usable_cpus", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    assert machine.clamp_workers(asked) == expected


def test_trainer_loaders_use_the_clamped_workers(monkeypatch, capsys):
    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = load_config(None, ["data.num_workers=4", "data.limit_train=16", "data.limit_test=8"])
    trainer = Trainer(cfg, torch.device("cpu"), DistInfo(), None)
    assert trainer.train_loader.num_workers == trainer.test_loader.num_workers == 2
    assert "data.num_workers=4 lowered to 2" in capsys.readouterr().out
