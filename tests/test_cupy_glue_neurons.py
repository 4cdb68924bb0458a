"""The cupy backend's custom-op registrations, and the plugin neurons on it equal to the torch
backend, with the kernels run on the CPU (tests/cupy_support/cpu_glue.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from cupy_support.glue_inputs import (
    CONV_CASES,
    close,
    conv_case_inputs,
    dense_inputs,
    leaves,
    tolerance,
)
from cupy_support.inputs import generator
from spikingjelly.activation_based import functional, surrogate

from spikingjelly_psn.neuron.masked_psn import MaskedPSN
from spikingjelly_psn.neuron.mfpsn import MFPSN
from spikingjelly_psn.neuron.psn import PSN
from spikingjelly_psn.neuron.sliding_psn import SlidingPSN
from spikingjelly_psn.ops import surrogates
from spikingjelly_psn.ops.cupy import _ops, _source

pytestmark = pytest.mark.usefixtures("cpu_glue")  # kernels emulated on the CPU (conftest.py)


def test_opcheck_schema_fake_and_autograd_registration():
    x, w, b, hist, grad_s = conv_case_inputs(CONV_CASES["dilation-3-history"], torch.float32, 9)
    xl, wl, bl = leaves(x, w, b)
    sg, (p0, p1, p2) = surrogates.encode(surrogate.ATan(), "cupy")
    mean = x.new_zeros(x.shape[2])
    xd, wd, bd, gd = leaves(*dense_inputs(4, 3, 7, torch.float32, 10))
    cases = [
        (_ops.causal_conv_fire, (xl, wl, bl, hist, 3, False, sg, p0, p1, p2, True)),
        (_ops.causal_conv_backward, (grad_s, x, w, b, None, None, hist, 3, _source.MODE_FIRE,
                                     sg, p0, p1, p2, False)),
        (_ops.causal_conv_backward, (None, x, w, mean, mean + 0.1, mean + 0.2, hist, 3,
                                     _source.MODE_STATS, 0, 0.0, 0.0, 0.0, True)),
        (_ops.conv_channel_stats, (xl, wl, hist, 3, False)),
        (_ops.dense_fire, (xd, wd, bd, sg, p0, p1, p2)),
        (_ops.dense_backward, (gd.detach(), xd.detach(), wd.detach(), bd.detach(), sg, p0, p1,
                               p2)),
    ]  # fmt: skip
    for op, args in cases:
        torch.library.opcheck(
            op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
        )


def test_gpu_validation_kernel_cases_pass_on_the_emulated_kernels():
    """The cases compute-sanitizer runs on a GPU agree with the torch backend here first."""
    from spikingjelly_psn.ops.cupy import gpu_checks

    for case in gpu_checks.kernel_cases():
        gpu_checks.run_case(case, torch.device("cpu"))


def _twins(make, seed: int):
    torch.manual_seed(seed)
    net = make()
    twin = copy.deepcopy(net)
    twin.backend = "cupy"
    return net, twin


def _run_neuron(net, chunks, grad_seed: int):
    """Spikes of consecutive calls (one sequence), the loss's backward, gradients by name."""
    functional.reset_net(net)
    inputs = leaves(*chunks)
    spikes = [net(x) for x in inputs]
    g = generator(grad_seed)
    sum((s * torch.randn(s.shape, generator=g).to(s.dtype)).sum() for s in spikes).backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    return spikes, [x.grad for x in inputs], grads


def _compare_neurons(net, twin, chunks, tol=None, flips=0.0):
    tol = tol or {"rtol": 1e-4, "atol": 1e-5}
    spikes, x_grads, grads = _run_neuron(net, chunks, 1)
    c_spikes, c_x_grads, c_grads = _run_neuron(twin, chunks, 1)
    for got, want in zip(c_spikes, spikes):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert (got != want).float().mean() <= flips
    assert 0 < torch.cat([s.flatten() for s in spikes]).float().mean() < 1
    for got, want in zip(c_x_grads, x_grads):
        close(got, want, **tol)
    assert grads.keys() == c_grads.keys()
    for name, want in grads.items():
        assert want is not None and c_grads[name] is not None, name
        close(c_grads[name], want, **tol)
    for got, want in zip(twin.buffers(), net.buffers()):
        close(got, want, rtol=1e-5, atol=1e-6)


def test_psn_cupy_equals_torch(cpu_glue):
    net, twin = _twins(lambda: PSN(T=6, surrogate_function=surrogate.Sigmoid(alpha=3.0)), 0)
    x = torch.randn(6, 4, 5, generator=generator(1)) * 2
    _compare_neurons(net, twin, [x])
    assert cpu_glue.of("dense") and cpu_glue.of("dense_backward")


@pytest.mark.parametrize("lambda_,chunks", [(0.5, (6,)), (1.0, (6,)), (1.0, (2, 1, 3))], ids=str)
def test_masked_psn_cupy_equals_torch(cpu_glue, lambda_, chunks):
    net, twin = _twins(
        lambda: MaskedPSN(k=3, T=6, lambda_init=lambda_, step_mode="m", streaming=True), 2
    )
    x = torch.randn(6, 3, 4, generator=generator(3)) * 2
    _compare_neurons(net, twin, list(x.split(list(chunks))))
    assert len(cpu_glue.of("dense")) == len(chunks)


@pytest.mark.parametrize("exp_init", [True, False])
def test_sliding_psn_cupy_equals_torch(cpu_glue, exp_init):
    net, twin = _twins(
        lambda: SlidingPSN(
            k=3,
            exp_init=exp_init,
            surrogate_function=surrogate.PiecewiseQuadratic(),
            step_mode="m",
            streaming=True,
        ),
        4,
    )
    x = torch.randn(9, 2, 5, generator=generator(5)) * 2
    _compare_neurons(net, twin, list(x.split([4, 1, 4])))
    assert len(cpu_glue.of("fire")) == 3


MFPSN_CASES = {
    # name: (constructor kwargs, train, chunks, input dtype)
    "bn-train": ({"threshold": "bn"}, True, (8,), torch.float32),
    "bn-train-float-weights-dilation": ({"dilation": 2, "quantize": False}, True, (8,),
                                        torch.float32),
    "bn-train-bf16-input": ({"threshold": "bn"}, True, (8,), torch.bfloat16),
    "bn-train-chunks": ({"dilation": 2}, True, (6, 2), torch.float32),
    "bn-eval-chunks": ({"dilation": 2}, False, (3, 5), torch.float32),
    "learnable-train-chunks": ({"threshold": "learnable"}, True, (5, 3), torch.float32),
    "learnable-eval": ({"threshold": "learnable", "quantize": False}, False, (8,), torch.float32),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MFPSN_CASES), ids=str)
def test_mfpsn_cupy_equals_torch(cpu_glue, case):
    kwargs, train, chunks, dtype = MFPSN_CASES[case]

    def make():
        net = MFPSN(k=3, channels=4, step_mode="m", streaming=True, **kwargs)
        with torch.no_grad():
            if net.threshold == "bn":
                net.gamma.uniform_(0.5, 1.5)
                net.beta.uniform_(-1.0, 0.0)
                net.running_mean.uniform_(-0.5, 0.5)
                net.running_var.uniform_(0.5, 2.0)
            else:
                net.bias.uniform_(-1.0, 0.0)
        return net.train(train)

    net, twin = _twins(make, 6)
    x = (torch.randn(8, 2, 4, 3, 3, generator=generator(7)) * 1.5).to(dtype)
    # bn folding: the folded weights are quantized; a last-bit difference in the statistics may
    # flip a spike right at the threshold or a weight right between two powers of two
    tol = tolerance(dtype) if dtype != torch.float32 else {"rtol": 1e-3, "atol": 1e-4}
    _compare_neurons(net, twin, list(x.split(list(chunks))), tol=tol, flips=0.01)
    assert len(cpu_glue.of("fire")) == len(chunks)
    assert len(cpu_glue.of("stats")) == (len(chunks) if train and "bn" in case else 0)
