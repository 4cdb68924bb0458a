"""The neurons users put in their SpikingJelly nets (each listed in :mod:`spikingjelly_psn.catalog`)."""

from spikingjelly_psn.neuron.masked_psn import MaskedPSN
from spikingjelly_psn.neuron.mfpsn import MFPSN
from spikingjelly_psn.neuron.psn import PSN
from spikingjelly_psn.neuron.schedules import LambdaSchedule, sawtooth_dilations
from spikingjelly_psn.neuron.sliding_psn import SlidingPSN
from spikingjelly_psn.neuron.streaming import set_streaming

__all__ = [
    "MFPSN",
    "PSN",
    "LambdaSchedule",
    "MaskedPSN",
    "SlidingPSN",
    "sawtooth_dilations",
    "set_streaming",
]
