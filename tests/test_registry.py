"""``register`` / ``unregister``: the plugin classes in ``spikingjelly.activation_based.neuron``."""

from __future__ import annotations

from spikingjelly.activation_based import neuron as sj_neuron

import spikingjelly_psn
from spikingjelly_psn import catalog

#: The plugin classes SpikingJelly has a class of the same name for (it is not replaced unasked).
BUILTINS = [name for name in catalog.NAMES if hasattr(sj_neuron, name)]
ADDED = [name for name in catalog.NAMES if name not in BUILTINS]


def _spikingjelly_classes() -> dict[str, object]:
    return {name: getattr(sj_neuron, name, None) for name in catalog.NAMES}


def test_register_adds_what_spikingjelly_lacks_and_keeps_builtins() -> None:
    assert BUILTINS == ["PSN", "MaskedPSN", "SlidingPSN"] and "MFPSN" in ADDED
    originals = _spikingjelly_classes()
    try:
        assert spikingjelly_psn.register() == ADDED
        assert all(getattr(sj_neuron, name) is getattr(spikingjelly_psn, name) for name in ADDED)
        assert {name: getattr(sj_neuron, name) for name in BUILTINS} == {
            name: originals[name] for name in BUILTINS
        }
    finally:
        spikingjelly_psn.unregister()
    assert _spikingjelly_classes() == originals


def test_register_replace_builtins_and_unregister_restores() -> None:
    originals = _spikingjelly_classes()
    try:
        assert spikingjelly_psn.register(replace_builtins=True) == list(catalog.NAMES)
        assert all(getattr(sj_neuron, n) is getattr(spikingjelly_psn, n) for n in catalog.NAMES)
        assert spikingjelly_psn.register(replace_builtins=True) == []  # idempotent
    finally:
        spikingjelly_psn.unregister()
    assert _spikingjelly_classes() == originals
