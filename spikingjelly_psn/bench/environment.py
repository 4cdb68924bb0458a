"""Where a run happened: device name and the versions every result row carries."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from ..devices import device_name


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def plugin_version() -> str:
    """Version of this package: installed metadata, else the source tree's ``__version__``."""
    version = _version("spikingjelly-psn")
    if version != "not installed":
        return version
    import spikingjelly_psn

    return getattr(spikingjelly_psn, "__version__", "source tree")


def cupy_version() -> str:
    """Version of whichever CuPy wheel is installed (read from metadata: CuPy is not imported)."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-cuda"):
            return f"{name} {dist.version}"
    return "not installed"


def run_info(device: torch.device, command: str) -> dict[str, str]:
    """Columns shared by every row of one run."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "none",
        "spikingjelly_version": _version("spikingjelly"),
        "spikingjelly_psn_version": plugin_version(),
        "cupy_version": cupy_version(),
        "python_version": platform.python_version(),
        "command": command,
    }
