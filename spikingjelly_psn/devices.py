"""The ``--device`` option of the command-line tools, and how a device is named in their output."""

from __future__ import annotations

import platform

import torch


def parse_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` present here; a ``ValueError`` naming the fix otherwise.

    ``torch.device`` accepts ``cpu:99`` and ``cuda:7`` on a one-GPU machine; neither would run.
    """
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text!r}: only cpu and cuda are supported")
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise ValueError(f"--device {text!r}: the CPU takes no index; use --device cpu")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {text!r}: CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"--device {text!r}: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return device


def cpu_name() -> str:
    """The CPU model, from ``/proc/cpuinfo`` where Linux provides it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A human-readable name of ``device``: the GPU model, or the CPU model and its threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({threads} thread{'s' if threads != 1 else ''})"
