"""Float64 gradcheck of every differentiable path (smooth surrogate, so the forward is differentiable)."""

import pytest
import torch
from spikingjelly.activation_based import surrogate

from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN
from spikingjelly_psn.ops import reference

SMOOTH = [surrogate.ATan(spiking=False), surrogate.Sigmoid(spiking=False)]


def _check(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("sg", SMOOTH)
def test_dense_fire(sg):
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)  # rectangular: a chunk
    b = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    _check(lambda *a: reference.dense_fire(*a, sg), x, w, b)


@pytest.mark.parametrize("sg", SMOOTH)
@pytest.mark.parametrize("k, dilation, channels", [(3, 1, 1), (2, 2, 3), (1, 1, 2)])
def test_causal_conv_fire_with_history(sg, k, dilation, channels):
    lag = (k - 1) * dilation
    x = torch.randn(4, 2, channels, 3, dtype=torch.float64, requires_grad=True)
    hist = torch.randn(lag, 2, channels, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(channels, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    _check(
        lambda x, w, b, h: reference.causal_conv_fire(x, w, b, dilation, sg, h if lag else None),
        x,
        w,
        b,
        hist,
    )


def test_conv_channel_stats():
    x = torch.randn(5, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    _check(lambda x, w: reference.conv_channel_stats(x, w, 2), x, w)


@pytest.mark.parametrize(
    "make",
    [
        lambda sg: PSN(4, surrogate_function=sg),
        lambda sg: MaskedPSN(2, 4, lambda_init=0.4, surrogate_function=sg, step_mode="m"),
        lambda sg: MaskedPSN(2, 4, lambda_init=1.0, surrogate_function=sg, step_mode="m"),
        lambda sg: SlidingPSN(3, exp_init=False, surrogate_function=sg, step_mode="m"),
        lambda sg: MFPSN(
            2, dilation=2, channels=3, quantize=False, surrogate_function=sg, step_mode="m"
        ),
        lambda sg: MFPSN(
            3,
            channels=3,
            threshold="learnable",
            quantize=False,
            surrogate_function=sg,
            step_mode="m",
        ),
    ],
)
def test_neurons(make):
    neuron = make(SMOOTH[0]).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p for p in neuron.parameters()]

    def run(x, *_):
        if hasattr(neuron, "reset"):
            neuron.reset()
        return neuron(x)

    _check(run, x, *params)


@pytest.mark.parametrize(
    "make",
    [
        lambda sg: MaskedPSN(2, 4, lambda_init=1.0, surrogate_function=sg),
        lambda sg: SlidingPSN(3, exp_init=False, surrogate_function=sg),
        lambda sg: MFPSN(2, dilation=2, channels=3, quantize=False, surrogate_function=sg).eval(),
        lambda sg: MFPSN(
            3, channels=3, threshold="learnable", quantize=False, surrogate_function=sg
        ),
    ],
)
def test_single_step_sequences_back_propagate_through_the_queue(make):
    """Step t's output depends on the queued inputs of earlier steps, and its gradient says so."""
    neuron = make(SMOOTH[0]).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p for p in neuron.parameters()]

    def run(x, *_):
        neuron.reset()
        return torch.stack([neuron(x[t]) for t in range(x.shape[0])])

    _check(run, x, *params)


def test_quantized_mfpsn_weight_gradient_is_the_gradient_of_the_quantized_weight():
    """STE: ∂L/∂W equals ∂L/∂Wq of the same forward with Wq as a free tensor."""
    torch.manual_seed(0)
    sg = SMOOTH[0]
    neuron = MFPSN(3, channels=2, threshold="learnable", surrogate_function=sg, step_mode="m")
    neuron = neuron.double()
    x = torch.randn(6, 2, 2, dtype=torch.float64)
    (g_latent,) = torch.autograd.grad(neuron(x).sum(), neuron.weight)
    wq = neuron._quantized(neuron.weight.detach()).requires_grad_()
    out = reference.causal_conv_fire(x.view(6, 2, 2, 1), wq, neuron.bias.detach(), 1, sg)
    (g_free,) = torch.autograd.grad(out.sum(), wq)
    torch.testing.assert_close(g_latent, g_free)
