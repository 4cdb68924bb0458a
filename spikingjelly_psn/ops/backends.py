"""The backend seam: which backends exist and what each one declares about itself.

A backend is one package under ``ops/``, listed in :data:`PACKAGES`. Its module declares

- ``NAME``: the value of ``backend=`` that selects it;
- ``OPS``: the ops of :mod:`spikingjelly_psn.ops` it implements, as functions of the module
  (``batchnorm_conv_fire`` is optional: without it the statistics, fold and firing run in turn);
- ``SINGLE_STEP``: whether it runs single steps too (if not, only whole sequences, ``step_mode='m'``);
- ``EXTRAS``: the pip extras that install its library (``setup.py`` reads them as text);
- ``missing_library() -> str | None``: why its library cannot be imported, with the install command;
- ``unavailable_reason(device) -> str | None``: why it cannot run on ``device`` here.

Importing a backend module must not import its library nor touch a device. Everything else (the
neurons' ``supported_backends``, ``set_backend``, the train config, the bench) asks this module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

#: The backend packages; the first is the default, which runs everywhere.
PACKAGES: tuple[str, ...] = ("spikingjelly_psn.ops.fast", "spikingjelly_psn.ops.cupy")

# Filled once, on the first question; a dict lookup, which torch.compile traces without a break.
_by_name: dict[str, ModuleType] = {}


def _registry() -> dict[str, ModuleType]:
    if not _by_name:
        modules = [importlib.import_module(path) for path in PACKAGES]
        _by_name.update((module.NAME, module) for module in modules)
    return _by_name


def names() -> tuple[str, ...]:
    """Every backend name, the default first."""
    return tuple(_registry())


def default() -> str:
    """The backend that runs everywhere (the first listed)."""
    return names()[0]


def single_step_names() -> tuple[str, ...]:
    """The backends that also run single steps."""
    return tuple(name for name, module in _registry().items() if module.SINGLE_STEP)


def get(name: str) -> ModuleType:
    """The module implementing backend ``name``; ``NotImplementedError`` for an unknown name."""
    module = _registry().get(name)
    if module is None:
        raise NotImplementedError(f"backend={name!r} is unknown; choose one of {names()}.")
    return module


def op(name: str, backend: str):
    """Op ``name`` of ``backend``, or ``NotImplementedError`` when that backend lacks it."""
    module = get(backend)
    if name not in module.OPS:
        raise NotImplementedError(f"backend={backend!r} does not implement {name}.")
    return getattr(module, name)


def implements(op_name: str, backend: str) -> bool:
    """Whether ``backend`` implements op ``op_name`` (an optional op may be composed instead)."""
    return op_name in get(backend).OPS


def missing_library(name: str) -> str | None:
    """Why the library behind backend ``name`` cannot be imported (an install hint), or None."""
    return get(name).missing_library()


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device`` here, or None when it can."""
    return get(name).unavailable_reason(device)
