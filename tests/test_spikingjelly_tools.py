"""The plugin neurons with SpikingJelly's tools: functional forward, monitors, reset_net, CPU autocast."""

from __future__ import annotations

import pytest
import torch
from nets import CLASSES, STATEFUL, T, causal_neuron, make_input, make_net, make_neuron, ready
from spikingjelly.activation_based import base, functional, monitor
from torch import nn

from spikingjelly_psn import PSN

pytestmark = pytest.mark.usefixtures("seeded")


@pytest.mark.parametrize("cls", STATEFUL)
def test_to_functional_forward_matches_module_and_continues(cls: type) -> None:
    m = causal_neuron(cls)
    x = torch.randn(T, 3, 2, 4) * 2.0
    with torch.no_grad():
        expected = m(x)
        functional.reset_net(m)
        states = tuple(base.extract_memories(m))
        forward = base.to_functional_forward(m)
        (full,), _ = forward((x,), states)
        (first,), mid = forward((x[:2],), states)
        (second,), _ = forward((x[2:],), mid)
    assert tuple(base.extract_memories(m)) == states  # the functional calls left the module alone
    torch.testing.assert_close(full, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([first, second]), expected, rtol=0, atol=1e-6)
    assert 0 < expected.sum() < expected.numel()


@pytest.mark.parametrize("cls", CLASSES)
def test_output_monitor_records_every_call(cls: type) -> None:
    net = make_net(cls)
    x = make_input()
    ready(net, x)
    mon = monitor.OutputMonitor(net, cls)
    try:
        with torch.no_grad():
            for _ in range(2):
                net(x)
                functional.reset_net(net)
        shapes = [tuple(r.shape) for r in mon.records]
        assert shapes == [(T, 3, 4, 6, 6), (T, 3, 5)] * 2
        assert mon.monitored_layers == ["2", "5"]
        assert all(set(r.unique().tolist()) <= {0.0, 1.0} for r in mon.records)
    finally:
        mon.remove_hooks()


@pytest.mark.parametrize("cls", CLASSES)
def test_reset_net_clears_history(cls: type) -> None:
    net = nn.Sequential(causal_neuron(cls) if cls in STATEFUL else make_neuron(cls))
    fresh = nn.Sequential(causal_neuron(cls) if cls in STATEFUL else make_neuron(cls))
    fresh.load_state_dict(net.state_dict())
    fresh.eval()
    x1, x2 = torch.randn(2, T, 3, 2, 4) * 2.0
    with torch.no_grad():
        net(x1)
        functional.reset_net(net)
        assert torch.equal(net(x2), fresh(x2))
        functional.reset_net(net)
        functional.reset_net(fresh)
        if cls is not PSN:  # without a reset, a streaming neuron continues the first sequence
            net(x1[:3])
            assert not torch.equal(net(x2[:3]), fresh(x2[:3]))


@pytest.mark.parametrize("cls", CLASSES)
def test_cpu_autocast_bf16(cls: type) -> None:
    net = make_net(cls)
    x = make_input()
    ready(net, x)
    mon = monitor.OutputMonitor(net, cls)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        out.float().sum().backward()
    finally:
        mon.remove_hooks()
    functional.reset_net(net)
    assert out.dtype == torch.bfloat16
    assert [r.dtype for r in mon.records] == [torch.bfloat16] * 2
    assert set(torch.cat([r.flatten() for r in mon.records]).unique().tolist()) == {0.0, 1.0}
    for m in net.modules():
        if isinstance(m, cls):
            for p in m.parameters():
                assert p.dtype == torch.float32
                assert p.grad is not None and torch.isfinite(p.grad).all()
