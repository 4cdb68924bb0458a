"""The torch backend against SpikingJelly 2.0's own PSN, MaskedPSN and SlidingPSN."""

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate

from spikingjelly_psn import PSN, MaskedPSN, SlidingPSN

SHAPES = [(4, 2), (8, 3, 5), (16, 2, 3, 4, 4), (1, 7), (5, 1, 1, 9)]


def _grads(module, x):
    out = module(x)
    # a non-uniform upstream gradient catches transposed or misplaced terms
    upstream = torch.linspace(-1, 1, out.numel()).view_as(out)
    params = [p for p in module.parameters()]
    return out, torch.autograd.grad((out * upstream).sum(), [x, *params])


def _pair(ours, theirs, x):
    theirs.load_state_dict(ours.state_dict())
    out_a, grads_a = _grads(ours, x)
    out_b, grads_b = _grads(theirs, x)
    return out_a, out_b, grads_a, grads_b


@pytest.mark.parametrize("shape", SHAPES)
def test_psn_bit_for_bit(shape):
    torch.manual_seed(sum(shape))
    T = shape[0]
    x = torch.randn(shape, requires_grad=True)
    out_a, out_b, grads_a, grads_b = _pair(PSN(T), sj_neuron.PSN(T), x)
    assert torch.equal(out_a, out_b)
    assert set(out_a.unique().tolist()) <= {0.0, 1.0}
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0])
def test_masked_psn_bit_for_bit(shape, lam):
    torch.manual_seed(sum(shape))
    T = shape[0]
    k = max(1, T // 2)
    x = torch.randn(shape, requires_grad=True)
    ours = MaskedPSN(k, T, lambda_init=lam, step_mode="m")
    theirs = sj_neuron.MaskedPSN(k, T, lambda_init=lam, step_mode="m")
    out_a, out_b, grads_a, grads_b = _pair(ours, theirs, x)
    assert torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("exp_init", [True, False])
def test_sliding_psn_equal_up_to_rounding(shape, k, exp_init):
    """Smooth surrogate outputs compare the charges themselves; spikes and gradients too."""
    torch.manual_seed(sum(shape) + k)
    x = torch.randn(shape, requires_grad=True)
    smooth = surrogate.ATan(spiking=False)
    ours = SlidingPSN(k, exp_init=exp_init, surrogate_function=smooth, step_mode="m")
    theirs = sj_neuron.SlidingPSN(k, exp_init=exp_init, surrogate_function=smooth, step_mode="m")
    with torch.no_grad():
        ours.weight.uniform_(-1, 1)
    out_a, out_b, grads_a, grads_b = _pair(ours, theirs, x)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # spikes agree except where the charge is within rounding of the threshold
    charge = torch.tan(torch.pi * (out_b.detach() - 0.5)) / torch.pi
    ours.surrogate_function = theirs.surrogate_function = surrogate.ATan()
    differ = ours(x.detach()) != theirs(x.detach())
    assert (charge[differ].abs() < 1e-5).all()


@pytest.mark.parametrize(
    "make_ours, make_theirs",
    [
        (lambda: PSN(6), lambda: sj_neuron.PSN(6)),
        (lambda: MaskedPSN(3, 6, 0.5), lambda: sj_neuron.MaskedPSN(3, 6, 0.5)),
        (lambda: SlidingPSN(3, exp_init=False), lambda: sj_neuron.SlidingPSN(3, exp_init=False)),
    ],
)
def test_state_dict_moves_both_ways(make_ours, make_theirs):
    ours, theirs = make_ours(), make_theirs()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for name, tensor in ours.state_dict().items():
        assert tensor.shape == theirs.state_dict()[name].shape, name
    theirs.load_state_dict(ours.state_dict())
    fresh = make_ours()
    fresh.load_state_dict(theirs.state_dict())
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, ours.state_dict()[name]), name


def test_initialisation_matches_spikingjelly():
    torch.manual_seed(0)
    ours = PSN(8)
    torch.manual_seed(0)
    theirs = sj_neuron.PSN(8)
    assert torch.equal(ours.weight, theirs.weight)
    assert torch.equal(ours.bias, theirs.bias)
    assert torch.equal(SlidingPSN(5).weight, sj_neuron.SlidingPSN(5).weight)
    masked, sj_masked = MaskedPSN(3, 6), sj_neuron.MaskedPSN(3, 6)
    assert torch.equal(masked.mask0, sj_masked.mask0)
    assert torch.equal(masked.mask1, sj_masked.mask1)


def test_masked_lambda_loaded_from_state_dict_drives_the_forward():
    source = MaskedPSN(2, 4, lambda_init=1.0)
    target = MaskedPSN(2, 4, lambda_init=0.0)
    target.load_state_dict(source.state_dict())
    assert target.lambda_ == 1.0
    assert torch.equal(target.masked_weight(), source.weight * source.mask0)
