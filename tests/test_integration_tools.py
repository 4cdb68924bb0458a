"""The plugin neurons with SpikingJelly's and PyTorch's tools.

Functional forwards, monitors, ``torch.compile``, state_dict exchange (with SpikingJelly's own
PSN family too), CPU autocast, the neuron registry, backends, ``reset_net`` and a light import.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
import torch
from spikingjelly.activation_based import base, functional, layer, monitor, surrogate
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

import spikingjelly_psn
from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN
from spikingjelly_psn.ops import backends

T = 6
CLASSES = (PSN, MaskedPSN, SlidingPSN, MFPSN)
STATEFUL = (MaskedPSN, SlidingPSN, MFPSN)


def make_neuron(cls: type, **kwargs) -> nn.Module:
    """One multi-step neuron of ``cls`` with the constructor arguments this file uses."""
    own = {
        PSN: {"T": T},
        MaskedPSN: {"k": 3, "T": T, "lambda_init": 0.5, "step_mode": "m"},
        SlidingPSN: {"k": 3, "step_mode": "m"},
        MFPSN: {"k": 2, "dilation": 2, "step_mode": "m"},
    }[cls]
    return cls(**{**own, **kwargs})


def make_net(cls: type, **kwargs) -> nn.Sequential:
    """Conv, batch norm, neuron, then a linear layer and a second neuron, in multi-step mode.

    The linear weights are scaled up so that the second neuron fires too.
    """
    fc = layer.Linear(4 * 6 * 6, 5)
    nn.init.uniform_(fc.weight, -0.5, 0.5)
    net = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),
        make_neuron(cls, **kwargs),
        layer.Flatten(),
        fc,
        make_neuron(cls, **kwargs),
    )
    functional.set_step_mode(net, "m")
    return net


def make_input(batch: int = 3) -> torch.Tensor:
    return torch.randn(T, batch, 2, 6, 6) * 2.0


def ready(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Materialise lazy parameters (MFPSN) as users must before building an optimizer."""
    return spikingjelly_psn.materialize(net, x)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------ functional forward


def causal_neuron(cls: type) -> nn.Module:
    """A streaming neuron that continues a sequence across calls (λ = 1, MFPSN in eval)."""
    m = make_neuron(cls, streaming=True)
    if cls is MaskedPSN:
        m.lambda_ = 1.0
    if cls is MFPSN:
        m.materialize_channels(2)
        m.eval()
    return m


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


# ------------------------------------------------------------------ monitors


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


# ------------------------------------------------------------------ torch.compile


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


# ------------------------------------------------------------------ state_dict


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


# ------------------------------------------------------------------ autocast


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


# ------------------------------------------------------------------ registry


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


# ------------------------------------------------------------------ backends and reset


@pytest.mark.parametrize("cls", CLASSES)
def test_set_backend(cls: type) -> None:
    net = make_net(cls)
    neurons = [m for m in net.modules() if isinstance(m, cls)]
    spikingjelly_psn.set_backend(net, "torch")
    assert [m.backend for m in neurons] == ["torch", "torch"]
    with pytest.raises(NotImplementedError, match="backend='no-such-backend' is unknown"):
        spikingjelly_psn.set_backend(net, "no-such-backend")
    assert [m.backend for m in neurons] == ["torch", "torch"]
    with pytest.raises(NotImplementedError, match="no-such-backend"):
        neurons[0].backend = "no-such-backend"
    with pytest.raises(NotImplementedError, match="no-such-backend"):
        make_neuron(cls, backend="no-such-backend")
    if backends.missing_library("cupy") is not None:
        with pytest.raises(ImportError, match="pip install"):
            spikingjelly_psn.set_backend(net, "cupy", instance=cls)
        return
    spikingjelly_psn.set_backend(net, "cupy", instance=cls)
    assert [m.backend for m in neurons] == ["cupy", "cupy"]
    with pytest.raises(RuntimeError, match="cupy.*CUDA"):  # CPU tensors
        ready(net, make_input())


def test_cupy_backend_without_cupy_raises_import_error(cupy_missing: None) -> None:
    with pytest.raises(ImportError, match="pip install"):
        SlidingPSN(2, step_mode="m", backend="cupy")
    net = make_net(SlidingPSN)
    with pytest.raises(ImportError, match="pip install"):
        spikingjelly_psn.set_backend(net, "cupy")


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


# ------------------------------------------------------------------ import


def test_import_does_not_load_cupy_or_initialise_cuda() -> None:
    code = textwrap.dedent(
        """
        import sys
        import spikingjelly_psn
        assert "cupy" not in sys.modules, "cupy imported by the package import"
        import torch
        x = torch.randn(4, 2, 3, 5)
        for n in (spikingjelly_psn.PSN(4), spikingjelly_psn.MaskedPSN(2, 4, step_mode="m"),
                  spikingjelly_psn.SlidingPSN(2, step_mode="m"),
                  spikingjelly_psn.MFPSN(2, step_mode="m")):
            n(x)
        assert "cupy" not in sys.modules, "cupy imported by building or running a neuron"
        assert not torch.cuda.is_initialized(), "CUDA initialised"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
