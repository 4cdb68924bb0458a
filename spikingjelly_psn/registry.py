"""Making the plugin neurons reachable as ``spikingjelly.activation_based.neuron.<Name>``."""

from __future__ import annotations

_MISSING = object()
_saved: dict[str, object] = {}


def register(replace_builtins: bool = False) -> list[str]:
    """Add the plugin neurons to ``spikingjelly.activation_based.neuron``; return the names set.

    Names SpikingJelly lacks (``MFPSN``) are added. SpikingJelly's own ``PSN``, ``MaskedPSN`` and
    ``SlidingPSN`` are replaced only with ``replace_builtins=True``; :func:`unregister` restores them.
    """
    from spikingjelly.activation_based import neuron as sj_neuron

    from spikingjelly_psn import catalog

    names = []
    for cls in (neuron.cls() for neuron in catalog.NEURONS):
        current = getattr(sj_neuron, cls.__name__, _MISSING)
        if current is cls or (current is not _MISSING and not replace_builtins):
            continue
        _saved.setdefault(cls.__name__, current)
        setattr(sj_neuron, cls.__name__, cls)
        names.append(cls.__name__)
    return names


def unregister() -> None:
    """Undo :func:`register`: remove added names and restore SpikingJelly's classes."""
    from spikingjelly.activation_based import neuron as sj_neuron

    for name, original in _saved.items():
        if original is _MISSING:
            delattr(sj_neuron, name)
        else:
            setattr(sj_neuron, name, original)
    _saved.clear()
