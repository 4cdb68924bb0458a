"""The ``--device`` option of the command-line tools: a device that exists on this machine."""

from __future__ import annotations

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
