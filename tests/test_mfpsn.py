"""MFPSN against an independent loop-over-time implementation of docs/design.md §1."""

import copy
import functools
import math

import pytest
import torch
from spikingjelly.activation_based import functional, surrogate

from spikingjelly_psn import MFPSN as SingleStepDefaultMFPSN
from spikingjelly_psn import materialize, ops, sawtooth_dilations
from spikingjelly_psn.ops.quantize import quantize_power_of_two

SMOOTH = surrogate.ATan(spiking=False)
MFPSN = functools.partial(SingleStepDefaultMFPSN, step_mode="m")  # these tests feed sequences


def q_scalar(w: float, exp_min=None, exp_max=None) -> float:
    if w == 0:
        return 0.0
    e = round(math.log2(abs(w)))  # Python rounds half to even, like torch.round
    if exp_min is not None:
        e = max(e, exp_min)
    if exp_max is not None:
        e = min(e, exp_max)
    return math.copysign(2.0**e, w)


def loop_charge(x, weight, dilation):
    """H[t, n, c, s] = Σ_i w[c, i] x[t − (k−1−i)d, n, c, s], element by element in time."""
    T, k = x.shape[0], weight.shape[1]
    h = torch.zeros_like(x)
    for t in range(T):
        for i in range(k):
            src = t - (k - 1 - i) * dilation
            if src >= 0:
                h[t] += weight[:, i].view(1, -1, *([1] * (x.dim() - 3))) * x[src]
    return h


def loop_mfpsn(x, neuron, training):
    """The whole neuron (threshold, folding, quantizing) from docs/design.md §1, in float64."""
    w = neuron.weight.detach().double()
    dims = [d for d in range(x.dim()) if d != 2]
    view = (1, 1, -1, *([1] * (x.dim() - 3)))
    if neuron.threshold == "learnable":
        wq, b = w, neuron.bias.detach().double()
    else:
        if training:
            hf = loop_charge(x, w, neuron.dilation)
            mean, var = hf.mean(dims), hf.var(dims, unbiased=False)
        else:
            mean, var = neuron.running_mean.double(), neuron.running_var.double()
        scale = neuron.gamma.detach().double() / torch.sqrt(var + neuron.eps)
        wq, b = w * scale[:, None], neuron.beta.detach().double() - mean * scale
    if neuron.quantize:
        wq = torch.tensor(
            [[q_scalar(v, neuron.exp_min, neuron.exp_max) for v in row] for row in wq.tolist()],
            dtype=torch.float64,
        )
    return loop_charge(x, wq, neuron.dilation) + b.view(view)


CASES = [
    dict(k=3, dilation=1),
    dict(k=2, dilation=3),
    dict(k=4, dilation=2, quantize=False),
    dict(k=3, dilation=1, threshold="learnable"),
    dict(k=5, dilation=1, exp_min=-2, exp_max=0),
    dict(k=1, dilation=1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(7, 3, 4), (6, 2, 3, 4, 5), (2, 2, 2, 3, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_loop_implementation(case, shape, training):
    torch.manual_seed(len(shape) * 7 + case["k"])
    x = torch.randn(shape, dtype=torch.float64)
    neuron = MFPSN(surrogate_function=SMOOTH, channels=shape[2], **case).double()
    with torch.no_grad():
        neuron.weight.uniform_(-1.5, 1.5)
        if case.get("threshold") == "learnable":
            neuron.bias.uniform_(-1, 0)
        else:
            neuron.gamma.uniform_(0.5, 2)
            neuron.beta.uniform_(-1, 0)
            neuron.running_mean.uniform_(-0.2, 0.2)
            neuron.running_var.uniform_(0.5, 2)
    neuron.train(training)
    expected = SMOOTH(loop_mfpsn(x, neuron, training))
    torch.testing.assert_close(neuron(x), expected, rtol=1e-9, atol=1e-9)


def test_running_stats_follow_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(5, 4, 3, 2, 2)
    neuron = MFPSN(2, dilation=1, channels=3)
    bn = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        h = loop_charge(x, neuron.weight, 1)
        bn(h.permute(1, 2, 0, 3, 4).reshape(4, 3, -1))
    neuron(x)
    torch.testing.assert_close(neuron.running_mean, bn.running_mean)
    torch.testing.assert_close(neuron.running_var, bn.running_var)


def test_gradients_flow_through_batch_statistics():
    torch.manual_seed(1)
    x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    neuron = MFPSN(3, channels=4, quantize=False, surrogate_function=SMOOTH).double()
    params = (x, neuron.weight, neuron.gamma, neuron.beta)

    def with_stats(*args):
        neuron.reset()
        return neuron(args[0])

    assert torch.autograd.gradcheck(with_stats, params, eps=1e-6, atol=1e-6)

    def detached_stats():
        w = neuron.weight
        h = loop_charge(x, w, 1)
        mean, var = h.mean((0, 1)).detach(), h.var((0, 1), unbiased=False).detach()
        scale = neuron.gamma / torch.sqrt(var + neuron.eps)
        return SMOOTH(loop_charge(x, w * scale[:, None], 1) + neuron.beta - mean * scale)

    neuron.reset()
    g_full = torch.autograd.grad(neuron(x).sum(), neuron.weight)[0]
    g_detached = torch.autograd.grad(detached_stats().sum(), neuron.weight)[0]
    assert not torch.allclose(g_full, g_detached)


def _ran_fused(spikes: torch.Tensor) -> bool:
    """Whether the spikes came from the fused batch-norm op (under the neuron's reshapes)."""
    node = spikes.grad_fn
    while node.name() == "ViewBackward0":
        node = node.next_functions[0][0]
    return node.name() == "BatchNormConvFireBackward"


@pytest.mark.parametrize("fused", [False, True])
def test_gradcheck_through_batch_statistics_fused_or_not(fused, monkeypatch):
    """The torch backend fuses statistics, fold and firing into one autograd function on
    large inputs (``MOMENTS_FRACTION``); forced on or off here, on a small one."""
    monkeypatch.setattr(ops.fast, "MOMENTS_FRACTION", 0 if fused else 10**9)
    torch.manual_seed(3)
    x = torch.randn(7, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    neuron = MFPSN(3, dilation=2, channels=3, quantize=False, surrogate_function=SMOOTH).double()
    with torch.no_grad():
        neuron.gamma.uniform_(0.5, 2.0), neuron.beta.uniform_(-1.0, 1.0)
    assert _ran_fused(neuron(x)) == fused
    params = (x, neuron.weight, neuron.gamma, neuron.beta)
    assert torch.autograd.gradcheck(lambda x, *_: neuron(x), params, eps=1e-6, atol=1e-6)


def test_fused_and_separate_batch_norm_steps_train_alike(monkeypatch):
    """Spikes, running statistics and every gradient of the fused op equal those of the three
    steps run one after the other (a backend without the fused op)."""
    torch.manual_seed(4)
    x = torch.randn(16, 8, 6, 8, 8)
    upstream = torch.randn_like(x)
    twin = MFPSN(4, dilation=2, channels=6)
    with torch.no_grad():
        twin.weight.normal_(), twin.gamma.uniform_(0.5, 2.0), twin.beta.uniform_(-1.0, 1.0)
    results = []
    implements = ops.backends.implements
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(
                ops.backends,
                "implements",
                lambda op, b: op != "batchnorm_conv_fire" and implements(op, b),
            )
        neuron, xi = copy.deepcopy(twin), x.clone().requires_grad_()
        spikes = neuron(xi)
        assert _ran_fused(spikes) == fused
        spikes.backward(upstream)
        grads = [xi.grad, neuron.weight.grad, neuron.gamma.grad, neuron.beta.grad]
        results.append([spikes, neuron.running_mean, neuron.running_var, *grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


def test_straight_through_gradient_of_the_quantizer():
    w = torch.tensor([0.3, -0.7, 0.0, 5.0, 1e-3], requires_grad=True)
    q = quantize_power_of_two(w)
    assert q.tolist() == [0.25, -0.5, 0.0, 4.0, 2.0**-10]
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (grad,) = torch.autograd.grad((q * upstream).sum(), w)
    assert torch.equal(grad, upstream)  # ∂Q/∂w := 1, finite at 0
    bounded = quantize_power_of_two(torch.tensor([1e-3, 100.0, -0.3]), exp_min=-3, exp_max=2)
    assert bounded.tolist() == [0.125, 4.0, -0.25]
    assert quantize_power_of_two(torch.tensor([2**0.5 * 1.0000001, 3.0])).tolist() == [2.0, 4.0]


def test_quantized_weights_are_powers_of_two_in_training_and_eval():
    torch.manual_seed(2)
    neuron = MFPSN(4, channels=3)
    x = torch.randn(8, 2, 3)
    mean, var = torch.zeros(3), torch.ones(3)
    weight, _ = neuron._fold(mean, var, neuron.weight, neuron.gamma, neuron.beta)
    nonzero = weight[weight != 0].abs()
    assert torch.equal(torch.exp2(torch.log2(nonzero).round()), nonzero)
    neuron(x)
    neuron.eval()
    weight, _ = neuron._eval_constants()
    assert torch.equal(torch.exp2(torch.log2(weight.abs()).round()), weight.abs())


def _twin_output(neuron, x):
    twin = MFPSN(neuron.k, dilation=neuron.dilation, channels=neuron.channels).eval()
    twin.load_state_dict(neuron.state_dict())
    return twin(x)


@pytest.mark.parametrize(
    "edit",
    [
        lambda n: n.weight.data.mul_(-1),
        lambda n: n.running_mean.data.add_(5),
        lambda n: n.gamma.data.copy_(torch.full_like(n.gamma, 3.0)),
        lambda n: n.load_state_dict({**n.state_dict(), "beta": torch.full_like(n.beta, 2.0)}),
    ],
    ids=["data-mul", "data-add", "copy", "load_state_dict"],
)
def test_eval_output_follows_every_kind_of_parameter_edit(edit):
    """No cache to go stale: edits through .data, load_state_dict, copy_ all reach the output."""
    torch.manual_seed(4)
    neuron = MFPSN(3, channels=2).eval()
    x = torch.randn(6, 3, 2)
    with torch.no_grad():
        neuron.running_var.fill_(0.5)
        before = neuron(x)
        edit(neuron)
        after = neuron(x)
        assert not torch.equal(after, before)
        assert torch.equal(after, _twin_output(neuron, x))


def test_ema_copy_follows_its_averaged_parameters_and_buffers():
    torch.manual_seed(6)
    neuron = MFPSN(3, channels=2).eval()
    ema = torch.optim.swa_utils.AveragedModel(
        neuron, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.5), use_buffers=True
    )
    x = torch.randn(6, 3, 2)
    other = MFPSN(3, channels=2).eval()
    with torch.no_grad():
        other.running_mean.fill_(0.7)
        other.beta.fill_(0.5)
        before = ema(x)
        ema.update_parameters(other)
        after = ema(x)
        assert not torch.equal(after, before)
        assert torch.equal(after, _twin_output(ema.module, x))


def test_eval_output_follows_data_edits_the_old_cache_missed():
    torch.manual_seed(5)
    neuron = MFPSN(3, channels=2).eval()
    x = torch.randn(6, 3, 2)
    with torch.no_grad():
        before = neuron(x)
        neuron.weight.data.mul_(-1)
        assert not torch.equal(neuron(x), before)


@pytest.mark.parametrize("k, dilation", [(3, 1), (2, 3), (4, 2), (1, 1)])
@pytest.mark.parametrize("threshold", ["bn", "learnable"])
def test_streaming_equals_one_call_in_eval(k, dilation, threshold):
    torch.manual_seed(k * 10 + dilation)
    x = torch.randn(11, 2, 3, 2, 2)
    neuron = MFPSN(k, dilation=dilation, channels=3, threshold=threshold, streaming=True).eval()
    with torch.no_grad():
        full = neuron(x)
        functional.reset_net(neuron)
        chunks = torch.cat([neuron(x[:1]), neuron(x[1:5]), neuron(x[5:6]), neuron(x[6:])])
        functional.reset_net(neuron)
        neuron.step_mode = "s"
        steps = torch.stack([neuron(x[t]) for t in range(x.shape[0])])
    assert torch.equal(full, chunks)
    assert torch.equal(full, steps)


def test_lazy_channels_and_materialize():
    neuron = MFPSN(3)
    assert neuron.channels is None and neuron.has_uninitialized_params()
    net = torch.nn.Sequential(torch.nn.Identity(), neuron)
    materialize(net, torch.randn(4, 2, 5, 3, 3))
    assert neuron.channels == 5 and neuron.training
    assert neuron.weight.shape == (5, 3)
    assert neuron.queue == []  # materialize resets
    assert torch.equal(neuron.running_mean, torch.zeros(5))  # eval forward left stats alone
    torch.optim.SGD(net.parameters(), lr=0.1)  # all parameters are real now


def test_lazy_state_dict_loads_into_an_unmaterialised_neuron():
    source = MFPSN(2, channels=4)
    source(torch.randn(3, 2, 4))
    target = MFPSN(2)
    target.load_state_dict(source.state_dict())
    assert target.channels == 4
    source.eval()
    target.eval()
    x = torch.randn(5, 2, 4)
    assert torch.equal(source(x), target(x))


def test_channels_argument_and_learnable_threshold_keys():
    assert set(MFPSN(2, channels=3).state_dict()) == {
        "weight",
        "gamma",
        "beta",
        "running_mean",
        "running_var",
        "_extra_state",
    }
    neuron = MFPSN(2, channels=3, threshold="learnable", v_threshold=0.5)
    assert set(neuron.state_dict()) == {"weight", "bias", "_extra_state"}
    assert torch.equal(neuron.bias, torch.full((3,), -0.5))


def test_export_integer_reproduces_the_eval_neuron_with_shifts_and_adds():
    torch.manual_seed(3)
    neuron = MFPSN(3, dilation=2, channels=4, exp_min=-8, exp_max=3)
    x = torch.randn(9, 2, 4)
    neuron(x)
    neuron.eval()
    exported = neuron.export_integer()
    assert exported["sign"].dtype == torch.int8 and exported["exponent"].dtype == torch.int8
    assert exported["exponent"].min() >= -8 and exported["exponent"].max() <= 3
    weight = torch.ldexp(exported["sign"].float(), exported["exponent"].int())
    charge = loop_charge(x.double(), weight.double(), exported["dilation"])
    spikes = (charge + exported["bias"].double().view(1, 1, -1) >= 0).float()
    neuron.reset()
    with torch.no_grad():
        assert torch.equal(neuron(x), spikes)


def test_sawtooth_dilations():
    assert sawtooth_dilations(7) == [1, 2, 3, 1, 2, 3, 1]
    assert sawtooth_dilations(4, period=2) == [1, 2, 1, 2]
    assert sawtooth_dilations(0) == []
    with pytest.raises(ValueError, match="period"):
        sawtooth_dilations(3, period=0)


def test_state_saved_with_another_dilation_or_threshold_is_refused():
    source = MFPSN(3, dilation=2, channels=4)
    with pytest.raises(
        ValueError, match="saved from an MFPSN with dilation=2, but this one has dilation=1"
    ):
        MFPSN(3, dilation=1, channels=4).load_state_dict(source.state_dict())
    MFPSN(3, dilation=2, channels=4).load_state_dict(source.state_dict())


def test_lazy_neuron_loaded_with_strict_false_from_a_partial_state_says_what_is_missing():
    partial = {"weight": torch.randn(4, 3)}
    target = MFPSN(3)
    result = target.load_state_dict(partial, strict=False)
    assert "gamma" in result.missing_keys
    with pytest.raises(ValueError, match="gamma.*not initialised"):
        target(torch.randn(5, 2, 4))
