"""Parallel Spiking Neurons for SpikingJelly: PSN, masked PSN, sliding PSN and MFPSN.

Importing the package is cheap: the submodules (and torch, SpikingJelly, CuPy) load on first use.
"""

from __future__ import annotations

import importlib

from spikingjelly_psn import catalog

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(catalog.NAMES, "spikingjelly_psn.neuron"),
    "LambdaSchedule": "spikingjelly_psn.neuron",
    "sawtooth_dilations": "spikingjelly_psn.neuron",
    "set_streaming": "spikingjelly_psn.neuron",
    "set_backend": "spikingjelly_psn.backend",
    "materialize": "spikingjelly_psn.lazy",
    "register": "spikingjelly_psn.registry",
    "unregister": "spikingjelly_psn.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spikingjelly_psn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
