"""The ``backend`` surface SpikingJelly 2.0 removed: validation, library checks and ``set_backend``."""

from __future__ import annotations

import importlib.util
import logging

from torch import nn

from spikingjelly_psn.ops import BACKENDS

_log = logging.getLogger(__name__)

CUPY_MISSING = (
    'backend="cupy" needs CuPy, which is not installed: install it with '
    '`pip install "spikingjelly-psn[cupy13]"` (CUDA 13) or '
    '`pip install "spikingjelly-psn[cupy12]"` (CUDA 12), or use backend="torch".'
)


def cupy_installed() -> bool:
    """Whether CuPy can be imported (without importing it)."""
    return importlib.util.find_spec("cupy") is not None


def check_backend_library(backend: str) -> None:
    """Raise ``ImportError`` with an install hint when the library behind ``backend`` is missing."""
    if backend == "cupy" and not cupy_installed():
        raise ImportError(CUPY_MISSING)


def validate_backend(module: nn.Module, backend: str) -> None:
    """Reject a backend the module cannot run in its current step mode, then check its library."""
    name = type(module).__name__
    if backend not in BACKENDS:
        raise NotImplementedError(
            f"{name}: backend={backend!r} is unknown; choose one of {BACKENDS}."
        )
    supported = module.supported_backends
    if backend not in supported:
        raise NotImplementedError(
            f"{name} in step_mode={module.step_mode!r} does not support backend={backend!r} "
            f"(it runs on {supported}); backend={backend!r} runs whole sequences: construct the "
            f"neuron with step_mode='m' or call functional.set_step_mode(net, 'm') first."
        )
    check_backend_library(backend)


def set_backend(
    net: nn.Module, backend: str, instance: type | tuple[type, ...] | None = None
) -> None:
    """Set ``backend`` on every submodule of ``net`` that has one (optionally only ``instance`` types).

    As in SpikingJelly 0.0.0.0.14, a module that does not support the backend keeps its own and
    a warning is logged; a backend name no module could support is an error (a typo).
    """
    if backend not in BACKENDS:
        raise NotImplementedError(f"backend={backend!r} is unknown; choose one of {BACKENDS}.")
    for module in net.modules():
        if instance is not None and not isinstance(module, instance):
            continue
        if not hasattr(module, "supported_backends"):
            continue
        if backend in module.supported_backends:
            module.backend = backend
        else:
            _log.warning(
                "%s does not support backend=%r; it keeps backend=%r.",
                type(module).__name__,
                backend,
                module.backend,
            )
