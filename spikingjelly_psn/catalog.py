"""The plugin neurons in one place: what ``train`` and ``bench`` need to know of each.

A new neuron is its module under ``neuron/``, its export there, and one :class:`PluginNeuron`
in :data:`NEURONS`. Importing this module is cheap (no torch): a class is imported when built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _never(threshold: str) -> bool:
    return False


@dataclass(frozen=True)
class PluginNeuron:
    """One plugin neuron: its names, its constructor arguments in train and bench, its traits."""

    #: The class name: in ``spikingjelly_psn`` and as ``neuron.name`` of a train config.
    name: str
    #: Its name in ``spikingjelly-psn bench --neurons``.
    bench_name: str
    #: Constructor arguments from a train config's ``neuron`` section and the time-steps T
    #: (the trainer adds backend, surrogate and step mode).
    train_kwargs: Callable[[Any, int], dict[str, Any]]
    #: Constructor arguments of a bench case (a ``CaseSpec``; the bench adds the backend).
    #: SpikingJelly's class of the same name, when there is one, takes the same.
    bench_kwargs: Callable[[Any], dict[str, Any]]
    #: ``neuron.k`` applies (and must not exceed T).
    takes_k: bool = True
    #: Each neuron site gets the next of ``neuron.dilations``.
    per_site_dilation: bool = False
    #: Its λ follows ``neuron.lambda_schedule`` over the epochs (:class:`LambdaSchedule`).
    lambda_schedule: bool = False
    #: Its input is a conv feature map ``[T, B, C, H, W]`` rather than ``[T, N']`` (bench).
    feature_map_input: bool = False
    #: SpikingJelly 2.0 has a class of the same name: bench times it as ``sj-<bench_name>``.
    spikingjelly_twin: bool = False
    #: Whether training, with the bench's threshold option, reads x again for batch-norm
    #: statistics (docs/design.md §4).
    bn_statistics: Callable[[str], bool] = _never

    def cls(self) -> type:
        """The class, imported on first use."""
        return getattr(importlib.import_module("spikingjelly_psn.neuron"), self.name)


NEURONS: tuple[PluginNeuron, ...] = (
    PluginNeuron(
        name="PSN",
        bench_name="psn",
        train_kwargs=lambda cfg, T: {"T": T},
        bench_kwargs=lambda spec: {"T": spec.T},
        takes_k=False,
        spikingjelly_twin=True,
    ),
    PluginNeuron(
        name="MaskedPSN",
        bench_name="masked",
        train_kwargs=lambda cfg, T: {"k": cfg.k, "T": T, "lambda_init": 0.0},
        # k <= T, and λ = 1: the trained, causal state
        bench_kwargs=lambda spec: {
            "k": min(spec.k, spec.T),
            "T": spec.T,
            "lambda_init": 1.0,
            "step_mode": "m",
        },
        lambda_schedule=True,
        spikingjelly_twin=True,
    ),
    PluginNeuron(
        name="SlidingPSN",
        bench_name="sliding",
        train_kwargs=lambda cfg, T: {"k": cfg.k, "exp_init": cfg.exp_init},
        bench_kwargs=lambda spec: {"k": spec.k, "step_mode": "m"},
        spikingjelly_twin=True,
    ),
    PluginNeuron(
        name="MFPSN",
        bench_name="mfpsn",
        train_kwargs=lambda cfg, T: {
            "k": cfg.k,
            "threshold": cfg.threshold,
            "quantize": cfg.quantize,
        },
        bench_kwargs=lambda spec: {
            "k": spec.k,
            "dilation": spec.dilation,
            "channels": spec.channels,
            "threshold": spec.mfpsn_threshold,
            "step_mode": "m",
        },
        per_site_dilation=True,
        feature_map_input=True,
        bn_statistics=lambda threshold: threshold == "bn",
    ),
)

NAMES: tuple[str, ...] = tuple(neuron.name for neuron in NEURONS)
BENCH_NAMES: tuple[str, ...] = tuple(neuron.bench_name for neuron in NEURONS)


def by_name(name: str) -> PluginNeuron | None:
    """The plugin neuron whose class is ``name``, or None (a SpikingJelly neuron, say)."""
    return next((neuron for neuron in NEURONS if neuron.name == name), None)


def by_bench_name(bench_name: str) -> PluginNeuron | None:
    """The plugin neuron called ``bench_name`` in the bench, or None (a baseline)."""
    return next((neuron for neuron in NEURONS if neuron.bench_name == bench_name), None)
