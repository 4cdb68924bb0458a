"""The neuron catalog: every plugin neuron listed once, and train and bench build it from there."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron

import spikingjelly_psn
from spikingjelly_psn import catalog
from spikingjelly_psn.bench import cases
from spikingjelly_psn.train.config import NEURONS, NeuronConfig
from spikingjelly_psn.train.neurons import NeuronMaker

SPEC = cases.CaseSpec("", "torch", T=4, k=2, dilation=2, channels=3, mfpsn_threshold="bn")
CPU = torch.device("cpu")


def test_names_are_unique_and_every_consumer_lists_every_neuron():
    assert len(set(catalog.NAMES)) == len(catalog.NAMES) == len(set(catalog.BENCH_NAMES))
    assert [plugin.cls().__name__ for plugin in catalog.NEURONS] == list(catalog.NAMES)
    assert set(catalog.NAMES) <= set(spikingjelly_psn.__all__)
    assert NEURONS[: len(catalog.NAMES)] == catalog.NAMES
    assert cases.PLUGIN_NEURONS == catalog.BENCH_NAMES


@pytest.mark.parametrize("plugin", catalog.NEURONS, ids=lambda p: p.name)
def test_train_builds_each_neuron_from_the_config(plugin):
    maker = NeuronMaker(NeuronConfig(name=plugin.name, k=2, dilations=[3, 1]), T=4)
    first, second = maker(), maker()
    assert type(first) is plugin.cls() and first.step_mode == "m"
    if plugin.per_site_dilation:
        assert (first.dilation, second.dilation) == (3, 1)


@pytest.mark.parametrize("plugin", catalog.NEURONS, ids=lambda p: p.name)
def test_bench_builds_each_neuron_and_its_spikingjelly_twin(plugin):
    case = cases.build(replace(SPEC, neuron=plugin.bench_name), CPU, torch.float32)
    assert type(case.module) is plugin.cls() and case.impl == "torch"
    shape = cases.input_shape(plugin.bench_name, SPEC.T, 48, SPEC.channels)
    assert case.module(torch.randn(shape)).shape == shape
    if plugin.spikingjelly_twin:
        twin = cases.build(replace(SPEC, neuron=f"sj-{plugin.bench_name}"), CPU, torch.float32)
        assert type(twin.module) is getattr(sj_neuron, plugin.name)
        assert (twin.k, twin.dilation) == (case.k, case.dilation)
