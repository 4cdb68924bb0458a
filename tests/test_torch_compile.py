"""The plugin neurons under torch.compile: same results as eager, no graph break in a neuron."""

from __future__ import annotations

import pytest
import torch
from nets import CLASSES, T, make_input, make_net, make_neuron, ready
from spikingjelly.activation_based import functional, surrogate

from spikingjelly_psn import SlidingPSN

pytestmark = pytest.mark.usefixtures("seeded")


@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES)
def test_compile_aot_eager_matches_eager(cls: type) -> None:
    net = make_net(cls, surrogate_function=surrogate.ATan(spiking=False))
    x = make_input()
    ready(net, x).eval()
    compiled = torch.compile(net, backend="aot_eager")
    with torch.no_grad():
        eager = net(x)
        functional.reset_net(net)
        for _ in range(2):
            torch.testing.assert_close(compiled(x), eager, rtol=1e-6, atol=1e-6)
            functional.reset_net(net)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_compile_fullgraph_without_graph_breaks(cls: type, training: bool) -> None:
    """As SpikingJelly's own PSN and SlidingPSN: one graph, no break inside the neuron."""
    neuron = make_neuron(cls, surrogate_function=surrogate.ATan(spiking=False))
    x = torch.randn(T, 3, 4) * 2.0
    ready(neuron, x).train(training)
    torch._dynamo.reset()
    compiled = torch.compile(neuron, backend="eager", fullgraph=True)
    with torch.no_grad():
        got = compiled(x)
        functional.reset_net(neuron)
        torch.testing.assert_close(got, neuron(x), rtol=1e-6, atol=1e-6)
    functional.reset_net(neuron)


@pytest.mark.slow
def test_compile_inductor_sliding_psn_forward_backward() -> None:
    net = make_net(SlidingPSN, surrogate_function=surrogate.ATan(spiking=False))
    x = make_input()
    eager = net(x)
    eager.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    functional.reset_net(net)
    out = torch.compile(net, backend="inductor")(x)
    out.sum().backward()
    functional.reset_net(net)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for p, g in zip(net.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
