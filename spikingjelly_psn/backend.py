"""The ``backend`` surface SpikingJelly 2.0 removed: validation and ``set_backend``.

Which backends exist, and whether their libraries are installed, is asked of
:mod:`spikingjelly_psn.ops.backends`.
"""

from __future__ import annotations

import logging

from torch import nn

from spikingjelly_psn.ops import backends

_log = logging.getLogger(__name__)


def validate_backend(module: nn.Module, backend: str) -> None:
    """Reject a backend the module cannot run in its current step mode, then check its library."""
    name = type(module).__name__
    if backend not in backends.names():
        raise NotImplementedError(
            f"{name}: backend={backend!r} is unknown; choose one of {backends.names()}."
        )
    supported = module.supported_backends
    if backend not in supported:
        raise NotImplementedError(
            f"{name} in step_mode={module.step_mode!r} does not support backend={backend!r} "
            f"(it runs on {supported}); backend={backend!r} runs whole sequences: construct the "
            f"neuron with step_mode='m' or call functional.set_step_mode(net, 'm') first."
        )
    missing = backends.missing_library(backend)
    if missing is not None:
        raise ImportError(missing)


def set_backend(
    net: nn.Module, backend: str, instance: type | tuple[type, ...] | None = None
) -> None:
    """Set ``backend`` on every submodule of ``net`` that has one (optionally only ``instance`` types).

    As in SpikingJelly 0.0.0.0.14, a module that does not support the backend keeps its own and
    a warning is logged; a backend name no module could support is an error (a typo).
    """
    backends.get(backend)  # an unknown name raises
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
