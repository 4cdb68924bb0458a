"""``register`` / ``unregister``: the plugin classes in ``spikingjelly.activation_based.neuron``."""

from __future__ import annotations

from spikingjelly.activation_based import neuron as sj_neuron

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN


def test_register_adds_mfpsn_and_keeps_builtins() -> None:
    originals = {name: getattr(sj_neuron, name) for name in ("PSN", "MaskedPSN", "SlidingPSN")}
    assert not hasattr(sj_neuron, "MFPSN")
    try:
        assert spikingjelly_psn.register() == ["MFPSN"]
        assert sj_neuron.MFPSN is MFPSN
        assert {name: getattr(sj_neuron, name) for name in originals} == originals
    finally:
        spikingjelly_psn.unregister()
    assert not hasattr(sj_neuron, "MFPSN")
    assert {name: getattr(sj_neuron, name) for name in originals} == originals


def test_register_replace_builtins_and_unregister_restores() -> None:
    originals = {name: getattr(sj_neuron, name) for name in ("PSN", "MaskedPSN", "SlidingPSN")}
    try:
        names = spikingjelly_psn.register(replace_builtins=True)
        assert sorted(names) == ["MFPSN", "MaskedPSN", "PSN", "SlidingPSN"]
        assert sj_neuron.PSN is PSN and sj_neuron.MaskedPSN is MaskedPSN
        assert sj_neuron.SlidingPSN is SlidingPSN and sj_neuron.MFPSN is MFPSN
        assert spikingjelly_psn.register(replace_builtins=True) == []  # idempotent
    finally:
        spikingjelly_psn.unregister()
    assert not hasattr(sj_neuron, "MFPSN")
    assert {name: getattr(sj_neuron, name) for name in originals} == originals
