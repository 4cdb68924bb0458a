"""state_dict round trips, lazy MFPSN loading, and exchange with SpikingJelly's own PSN family."""

from __future__ import annotations

import io

import pytest
import torch
from nets import CLASSES, T, make_input, make_net, ready
from spikingjelly.activation_based import functional, monitor, surrogate
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN

pytestmark = pytest.mark.usefixtures("seeded")


def state_dict_bytes(module: nn.Module) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return buffer


def neuron_outputs(net: nn.Module, cls: type, x: torch.Tensor) -> list[torch.Tensor]:
    """The spikes of every ``cls`` neuron in ``net`` for one no-grad forward, then reset."""
    mon = monitor.OutputMonitor(net, cls)
    try:
        with torch.no_grad():
            net(x)
    finally:
        mon.remove_hooks()
        functional.reset_net(net)
    return mon.records


def train_one_step(net: nn.Module, x: torch.Tensor) -> None:
    """Move every parameter away from its initial value."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    out = net(x)
    (out - torch.randint_like(out, 2)).square().mean().backward()
    optimizer.step()
    functional.reset_net(net)


@pytest.mark.parametrize("cls", CLASSES)
def test_state_dict_round_trip_through_bytes(cls: type) -> None:
    x = make_input()
    source = ready(make_net(cls), x)
    train_one_step(source, x)
    torch.manual_seed(1)
    target = make_net(cls)  # lazy MFPSNs stay unmaterialised: loading creates their parameters
    target.load_state_dict(torch.load(state_dict_bytes(source), weights_only=True))
    for a, b in zip(source.state_dict().values(), target.state_dict().values()):
        assert a == b if isinstance(a, dict) else torch.equal(a, b)  # MFPSN's _extra_state
    if cls is MaskedPSN:
        assert target[2].lambda_ == 0.5
    for mode in (True, False):
        source.train(mode)
        target.train(mode)
        expected, got = neuron_outputs(source, cls, x), neuron_outputs(target, cls, x)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        assert sum(s.sum() for s in expected) > 0


def test_lazy_mfpsn_loads_into_unmaterialised_module() -> None:
    x = torch.randn(T, 2, 5, 3) * 2.0
    source = MFPSN(3, step_mode="m")
    spikingjelly_psn.materialize(source, x)
    source.train()
    source(x)  # updates the running statistics
    functional.reset_net(source)
    target = MFPSN(3, step_mode="m")
    assert target.channels is None
    target.load_state_dict(torch.load(state_dict_bytes(source), weights_only=True))
    assert target.channels == 5
    source.eval()
    target.eval()
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


SJ_PAIRS = [
    (PSN, sj_neuron.PSN, {"T": T}, {}),
    (MaskedPSN, sj_neuron.MaskedPSN, {"k": 3, "T": T, "lambda_init": 0.5, "step_mode": "m"}, {}),
]


@pytest.mark.parametrize("ours, theirs, kwargs, sj_only", SJ_PAIRS, ids=["PSN", "MaskedPSN"])
@pytest.mark.parametrize("direction", ["to_spikingjelly", "from_spikingjelly"])
def test_state_dict_exchange_with_spikingjelly_dense(
    ours: type, theirs: type, kwargs: dict, sj_only: dict, direction: str
) -> None:
    plugin, builtin = ours(**kwargs), theirs(**kwargs, **sj_only)
    source, target = (plugin, builtin) if direction == "to_spikingjelly" else (builtin, plugin)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    target.load_state_dict(torch.load(state_dict_bytes(source), weights_only=True))
    x = torch.randn(T, 4, 7) * 2.0
    with torch.no_grad():
        assert torch.equal(plugin(x), builtin(x))
    if ours is MaskedPSN:
        assert plugin.lambda_ == builtin.lambda_ == 0.5


@pytest.mark.parametrize("direction", ["to_spikingjelly", "from_spikingjelly"])
def test_state_dict_exchange_with_spikingjelly_sliding(direction: str) -> None:
    plugin = SlidingPSN(
        3, exp_init=False, surrogate_function=surrogate.ATan(spiking=False), step_mode="m"
    )
    builtin = sj_neuron.SlidingPSN(
        3, exp_init=False, surrogate_function=surrogate.ATan(spiking=False), step_mode="m"
    )
    source, target = (plugin, builtin) if direction == "to_spikingjelly" else (builtin, plugin)
    target.load_state_dict(torch.load(state_dict_bytes(source), weights_only=True))
    x = torch.randn(T, 4, 7) * 2.0
    with torch.no_grad():
        torch.testing.assert_close(plugin(x), builtin(x), rtol=1e-5, atol=1e-6)
