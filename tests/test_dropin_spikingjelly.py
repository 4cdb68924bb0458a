"""Swapping SpikingJelly 2.0's PSN, MaskedPSN and SlidingPSN for the plugin's changes nothing.

Each test runs a call pattern of real SpikingJelly and PSN-paper scripts on twin networks, one
with SpikingJelly's class and one with the plugin's (same weights), and compares outputs,
gradients and the parameters after a few optimizer steps.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from spikingjelly.activation_based import base, functional, layer, surrogate
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import spikingjelly_psn
from spikingjelly_psn import PSN, MaskedPSN, SlidingPSN

T = 6
PAIRS = {
    "PSN": (PSN, sj_neuron.PSN, {"T": T}),
    "MaskedPSN": (MaskedPSN, sj_neuron.MaskedPSN, {"k": 3, "T": T, "lambda_init": 0.4}),
    "MaskedPSN-k>T": (MaskedPSN, sj_neuron.MaskedPSN, {"k": 8, "T": T, "lambda_init": 1.0}),
    "SlidingPSN": (SlidingPSN, sj_neuron.SlidingPSN, {"k": 3, "exp_init": False}),
}
CAUSAL = {  # the classes and settings SpikingJelly runs one step at a time
    "MaskedPSN": (MaskedPSN, sj_neuron.MaskedPSN, {"k": 3, "T": T, "lambda_init": 1.0}),
    "SlidingPSN": (SlidingPSN, sj_neuron.SlidingPSN, {"k": 3, "exp_init": False}),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def twin_nets(ours: type, theirs: type, kwargs: dict, step_mode: str) -> tuple[nn.Module, ...]:
    """``Linear -> neuron -> Linear`` with the plugin's and SpikingJelly's neuron, same weights."""

    def net(cls: type) -> nn.Module:
        torch.manual_seed(1)
        return nn.Sequential(
            layer.Linear(5, 8, step_mode=step_mode),
            cls(**kwargs),
            layer.Linear(8, 3, step_mode=step_mode),
        )

    a, b = net(ours), net(theirs)
    b.load_state_dict(a.state_dict())
    if step_mode == "m":
        functional.set_step_mode(a, "m")
        functional.set_step_mode(b, "m")
    return a, b


def assert_same(a: torch.Tensor, b: torch.Tensor, exact: bool) -> None:
    """Bit for bit where the plugin uses SpikingJelly's arithmetic, else up to float rounding."""
    if exact:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def exact(name: str) -> bool:
    return not name.startswith("SlidingPSN")


def train_steps(net: nn.Module, batches, loss_of) -> list[torch.Tensor]:
    """A few SGD steps; returns the losses (the graphs are not kept)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_of(net, x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def multi_step_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(net(x).mean(0), y)


def batches(sizes, steps: int = T):
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(steps, n, 5, generator=g) * 2, torch.randint(3, (n,), generator=g))
        for n in sizes
    ]


# ------------------------------------------------------------------ call patterns


@pytest.mark.parametrize("name", list(PAIRS))
def test_training_without_reset_net_and_a_smaller_last_batch(name: str) -> None:
    """The PSN paper's CIFAR10-DVS loop: multi-step, no reset_net, the last batch smaller."""
    ours, theirs, kwargs = PAIRS[name]
    a, b = twin_nets(ours, theirs, kwargs, "m")
    data = batches([4, 4, 3])
    losses_a = train_steps(a, data, multi_step_loss)
    losses_b = train_steps(b, data, multi_step_loss)
    for la, lb in zip(losses_a, losses_b):
        assert_same(la, lb, exact(name))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert_same(pa, pb, exact(name))
    with torch.no_grad():  # eval with odd batch sizes, still no reset
        a.eval(), b.eval()
        for x, _ in batches([5, 1, 3]):
            assert_same(a(x), b(x), exact(name))


@pytest.mark.parametrize("name", list(CAUSAL))
def test_single_step_training_loop_like_spikingjelly_examples(name: str) -> None:
    """``lif_fc_mnist.py`` style: default step mode, a loop over t, reset_net after each batch."""
    ours, theirs, kwargs = CAUSAL[name]
    a, b = twin_nets(ours, theirs, kwargs, "s")
    assert a[1].step_mode == b[1].step_mode == "s"

    def single_step_loss(net, x, y):
        out = sum(net(x[t]) for t in range(x.shape[0])) / x.shape[0]
        loss = nn.functional.cross_entropy(out, y)
        functional.reset_net(net)  # the example resets after backward; graphs are independent
        return loss

    data = batches([4, 2, 4])
    for la, lb in zip(
        train_steps(a, data, single_step_loss), train_steps(b, data, single_step_loss)
    ):
        torch.testing.assert_close(la, lb)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("name", list(CAUSAL))
def test_single_steps_keep_spikingjelly_queue_and_gradients(name: str) -> None:
    ours, theirs, kwargs = CAUSAL[name]
    a, b = ours(**kwargs), theirs(**kwargs)
    b.load_state_dict(a.state_dict())
    x = torch.randn(T, 4, 5, requires_grad=True)
    out_a = torch.stack([a(x[t]) for t in range(T)])
    out_b = torch.stack([b(x[t]) for t in range(T)])
    assert torch.equal(out_a, out_b)
    assert len(a.queue) == len(b.queue) and all(torch.equal(p, q) for p, q in zip(a.queue, b.queue))
    assert a.queue[-1].requires_grad  # the queue keeps its graph within a sequence
    if name == "MaskedPSN":
        assert a.time_step == b.time_step == T
    upstream = torch.randn(out_a.shape)
    grads_a = torch.autograd.grad((out_a * upstream).sum(), [x, *a.parameters()])
    grads_b = torch.autograd.grad((out_b * upstream).sum(), [x, *b.parameters()])
    for ga, gb in zip(grads_a, grads_b):
        assert torch.equal(ga, gb)
    functional.reset_net(a)
    assert a.queue == [] and getattr(a, "time_step", 0) == 0


@pytest.mark.parametrize("name", list(CAUSAL))
def test_single_steps_equal_the_multi_step_result(name: str) -> None:
    ours, _, kwargs = CAUSAL[name]
    neuron = ours(**kwargs, surrogate_function=surrogate.ATan(spiking=False)).double()
    x = torch.randn(T, 3, 4, dtype=torch.float64, requires_grad=True)
    steps = torch.stack([neuron(x[t]) for t in range(T)])
    neuron.reset()
    neuron.step_mode = "m"
    whole = neuron(x)
    torch.testing.assert_close(steps, whole)
    upstream = torch.randn(whole.shape, dtype=torch.float64)
    for ga, gb in zip(
        torch.autograd.grad((steps * upstream).sum(), [x, *neuron.parameters()]),
        torch.autograd.grad((whole * upstream).sum(), [x, *neuron.parameters()]),
    ):
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("name", list(PAIRS))
def test_cpu_bf16_autocast_gives_spikingjelly_dtypes_and_spikes(name: str) -> None:
    """An fp32 input (an encoder's, or a layer autocast keeps in fp32) under bf16 autocast:
    SpikingJelly's addmm then runs in bf16 and returns bf16."""
    ours, theirs, kwargs = PAIRS[name]

    def net(cls):
        torch.manual_seed(3)
        n = nn.Sequential(cls(**kwargs), layer.Linear(5, 8))
        functional.set_step_mode(n, "m")
        return n

    a, b = net(ours), net(theirs)
    b.load_state_dict(a.state_dict())
    x = torch.randn(T, 16, 5) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes_a, spikes_b = a[0](x), b[0](x)
        out_a, out_b = a[1](spikes_a), b[1](spikes_b)
    assert spikes_a.dtype == spikes_b.dtype == torch.bfloat16
    flips = (spikes_a != spikes_b).float().mean().item()
    assert flips == 0.0 if exact(name) else flips < 0.01
    out_a.float().sum().backward()
    out_b.float().sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert pa.grad.dtype == pb.grad.dtype == torch.float32
        torch.testing.assert_close(pa.grad, pb.grad, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", list(PAIRS))
def test_ema_copies_read_the_averaged_buffers(name: str) -> None:
    """``AveragedModel`` copies parameters and buffers; the copy must use them (λ included)."""
    ours, theirs, kwargs = PAIRS[name]
    a, b = twin_nets(ours, theirs, kwargs, "m")
    ema_a = AveragedModel(a, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    ema_b = AveragedModel(b, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    data = batches([4, 4])
    for net, ema in ((a, ema_a), (b, ema_b)):
        train_steps(net, data, multi_step_loss)
        if isinstance(net[1], (MaskedPSN, sj_neuron.MaskedPSN)):
            net[1].lambda_ = 1.0
        ema.update_parameters(net)
    if "Masked" in name:
        assert ema_a.module[1].lambda_.item() == ema_b.module[1].lambda_.item()
        assert torch.equal(ema_a.module[1].masked_weight(), ema_b.module[1].masked_weight())
    with torch.no_grad():
        x = batches([3])[0][0]
        assert_same(ema_a(x), ema_b(x), exact(name))


# ------------------------------------------------------------------ members


@pytest.mark.parametrize("name", list(PAIRS))
def test_constructor_defaults_and_public_members_match(name: str) -> None:
    ours, theirs, kwargs = PAIRS[name]
    mine = inspect.signature(ours).parameters
    for arg, param in inspect.signature(theirs).parameters.items():
        assert arg in mine, arg
        if arg != "surrogate_function":  # SpikingJelly's default is one ATan() shared by all
            assert mine[arg].default == param.default, arg
    a, b = ours(**kwargs), theirs(**kwargs)
    assert isinstance(a.surrogate_function, surrogate.ATan) and a.surrogate_function.alpha == 2.0
    missing = {m for m in dir(b) if not m.startswith("__")} - set(dir(a))
    assert not missing
    assert a.state_dict().keys() == b.state_dict().keys()
    if isinstance(b, base.MemoryModule):
        assert list(a._memories) == list(b._memories)
        assert a.step_mode == b.step_mode == "s"


def test_masked_psn_members() -> None:
    a, b = MaskedPSN(3, T, 0.3), sj_neuron.MaskedPSN(3, T, 0.3)
    b.load_state_dict(a.state_dict())
    assert isinstance(a.lambda_, torch.Tensor) and a.lambda_ is a._lambda_
    assert a.lambda_.item() == pytest.approx(0.3)
    assert torch.equal(a.masked_weight(), b.masked_weight())
    args = (a.lambda_, a.mask0, a.mask1, a.weight)
    assert torch.equal(
        MaskedPSN.gen_masked_weight(*args), sj_neuron.MaskedPSN.gen_masked_weight(*args)
    )
    a.lambda_ = b.lambda_ = 1.0
    assert torch.equal(a.masked_weight(), b.masked_weight())


@pytest.mark.parametrize("steps", [1, 2, 5, 9])
def test_sliding_psn_gen_gemm_weight_is_spikingjelly_s(steps: int) -> None:
    a, b = SlidingPSN(4, exp_init=False), sj_neuron.SlidingPSN(4, exp_init=False)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.gen_gemm_weight(steps), b.gen_gemm_weight(steps))
    (grad_a,) = torch.autograd.grad(a.gen_gemm_weight(steps).sum(), a.weight)
    (grad_b,) = torch.autograd.grad(b.gen_gemm_weight(steps).sum(), b.weight)
    assert torch.equal(grad_a, grad_b)


@pytest.mark.parametrize("formulation", ["gemm", "conv"])
def test_sliding_psn_takes_the_formulations_of_older_spikingjelly(formulation: str) -> None:
    """Scripts for SpikingJelly 0.0.0.0.14 pass ``backend='gemm'``/``'conv'`` and set a scalar bias."""
    ours = SlidingPSN(3, step_mode="m", backend=formulation)
    assert ours.backend == "torch"
    ours.bias = nn.Parameter(torch.as_tensor(-0.5))
    theirs = sj_neuron.SlidingPSN(3, step_mode="m")
    theirs.bias = nn.Parameter(torch.as_tensor(-0.5))
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(8, 5)
    assert torch.equal(ours(x), theirs(x))
    ours.backend = "conv" if formulation == "gemm" else "gemm"
    assert ours.backend == "torch"
    with pytest.raises(NotImplementedError, match="unknown"):
        MaskedPSN(2, 4, backend="conv")


@pytest.mark.parametrize("name", list(CAUSAL))
def test_functional_forward_keeps_spikingjelly_state_layout(name: str) -> None:
    ours, theirs, kwargs = CAUSAL[name]
    a, b = ours(**kwargs), theirs(**kwargs)
    b.load_state_dict(a.state_dict())
    forward_a, forward_b = base.to_functional_forward(a), base.to_functional_forward(b)
    states_a, states_b = tuple(base.extract_memories(a)), tuple(base.extract_memories(b))
    x = torch.randn(T, 2, 3)
    for t in range(3):
        (out_a,), states_a = forward_a((x[t],), states_a)
        (out_b,), states_b = forward_b((x[t],), states_b)
        assert torch.equal(out_a, out_b)
    assert len(states_a) == len(states_b) and len(states_a[-1]) == len(states_b[-1])
    assert a.queue == []  # the functional calls left the module alone


# ------------------------------------------------------------------ streaming (the opt-in)


def test_streaming_is_an_explicit_opt_in_for_whole_nets() -> None:
    net = nn.Sequential(
        SlidingPSN(3, step_mode="m"),
        layer.Linear(4, 4, step_mode="m"),
        MaskedPSN(2, 8, 1.0, step_mode="m"),
        spikingjelly_psn.MFPSN(2, dilation=2, channels=4, step_mode="m").eval(),
        PSN(8),
    )
    assert spikingjelly_psn.set_streaming(net[:4]) == 3
    x = torch.randn(8, 2, 4)
    with torch.no_grad():
        whole = copy.deepcopy(net[:4])
        spikingjelly_psn.set_streaming(whole, False)
        expected = whole(x)
        chunks = torch.cat([net[:4](x[:3]), net[:4](x[3:4]), net[:4](x[4:])])
    assert torch.equal(chunks, expected)
    functional.reset_net(net)
    assert all(getattr(m, "queue", []) == [] for m in net)
