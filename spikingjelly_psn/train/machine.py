"""What a run takes from the machine: its device, its CPU threads and its data-loading workers."""

from __future__ import annotations

import os

import torch

from ..devices import parse_device
from .config import ConfigError


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_world_size() -> int:
    """Processes torchrun started on this machine (1 for a plain run)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def resolve_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """The device ``--device`` names, with a CUDA index, made current.

    ``auto`` is CUDA when available, else the CPU. ``cuda`` is the current GPU, or GPU
    ``local_rank`` under torchrun (one GPU per process); ``cuda:N`` is GPU N of a plain run.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = parse_device(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if device.type != "cuda":
        return device
    if world > 1:
        if device.index is not None:
            raise ConfigError(
                f"--device {name}: under torchrun each process takes GPU LOCAL_RANK; "
                f"pass --device cuda (or leave it out)"
            )
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started process LOCAL_RANK={local_rank} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node"
            )
        device = torch.device("cuda", local_rank)
    elif device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    return device


def default_threads(device: torch.device) -> int | None:
    """PyTorch CPU threads of a run that does not choose: one per process on a CPU.

    The nets of a CPU run are small, so a second thread gains little on an idle machine, and
    on a busy one the threads wait for each other at every operation (a run several times
    slower). ``OMP_NUM_THREADS``, when set, is the user's choice. ``None`` leaves PyTorch's
    default (a GPU run, whose CPU threads mostly wait for the GPU).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if device.type == "cpu" else None


def set_threads(threads: int | None) -> None:
    """Use ``threads`` PyTorch CPU threads (``None``: keep PyTorch's choice)."""
    if threads is not None:
        torch.set_num_threads(threads)


def clamp_workers(requested: int) -> int:
    """Data-loading workers: at most the CPUs of this machine shared by torchrun's processes."""
    return min(requested, usable_cpus() // local_world_size())
