"""The reset-argument warning names the user's line, not the plugin's or SpikingJelly's."""

from __future__ import annotations

import warnings

import pytest
from spikingjelly.activation_based.model import parametric_lif_net

import spikingjelly_psn as sjp
from spikingjelly_psn.neuron import common


def _warning_of(make) -> warnings.WarningMessage:
    common._warned_reset_kwargs.clear()  # the warning is given once per class
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make()
    (warning,) = [w for w in caught if "has no reset" in str(w.message)]
    return warning


@pytest.mark.parametrize(
    "make",
    [
        lambda: sjp.PSN(T=4, detach_reset=True),
        lambda: sjp.MaskedPSN(k=2, T=4, tau=2.0),
        lambda: sjp.SlidingPSN(k=2, v_reset=None),
        lambda: sjp.MFPSN(k=2, decay_input=False),
    ],
    ids=["PSN", "MaskedPSN", "SlidingPSN", "MFPSN"],
)
def test_direct_construction_warns_at_the_callers_line(make):
    assert _warning_of(make).filename == __file__


def test_model_zoo_builder_warns_at_the_line_that_calls_it():
    warning = _warning_of(
        lambda: parametric_lif_net.CIFAR10Net(
            channels=8, spiking_neuron=sjp.SlidingPSN, k=2, detach_reset=True
        )
    )
    assert warning.filename == __file__
