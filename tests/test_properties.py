"""Property tests over shapes, k, dilation and T; single-step and chunked parity."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spikingjelly.activation_based import functional, surrogate

from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN
from spikingjelly_psn.ops import reference

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMOOTH = surrogate.ATan(spiking=False)


def toeplitz_charge(x, weight, dilation):
    """The same causal convolution as a dense [T, T] matrix per channel (an independent path)."""
    T, C, k = x.shape[0], weight.shape[0], weight.shape[1]
    mats = torch.zeros(C, T, T, dtype=x.dtype)
    for i in range(k):
        lag = (k - 1 - i) * dilation
        if lag < T:
            mats += torch.diag_embed(weight[:, i : i + 1].expand(C, T - lag), offset=-lag)
    return torch.einsum("cts,sbcn->tbcn", mats, x)


@SETTINGS
@given(
    T=st.integers(1, 12),
    B=st.integers(1, 3),
    C=st.integers(1, 4),
    S=st.integers(1, 5),
    k=st.integers(1, 6),
    dilation=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_reference_conv_equals_toeplitz(T, B, C, S, k, dilation, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, C, S, generator=g, dtype=torch.float64)
    w = torch.randn(C, k, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        reference.causal_conv_charge(x, w, dilation), toeplitz_charge(x, w, dilation)
    )


def one_call_chunks_steps(neuron, x, cuts):
    """The outputs of one call, of streamed chunks between ``cuts``, and of single steps."""
    T = x.shape[0]
    neuron.step_mode = "m"
    neuron.streaming = True
    full = neuron(x)
    functional.reset_net(neuron)
    bounds = [0, *[c for c in cuts if c < T], T]
    chunks = torch.cat([neuron(x[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a])
    functional.reset_net(neuron)
    neuron.step_mode = "s"
    steps = torch.stack([neuron(x[t]) for t in range(T)])
    return full, chunks, steps


@SETTINGS
@given(T=st.integers(1, 10), k=st.integers(1, 10), data=st.data())
def test_masked_psn_chunks_and_single_steps(T, k, data):
    k = min(k, T)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, T - 1)), max_size=3)))
    neuron = MaskedPSN(k, T, lambda_init=1.0, surrogate_function=SMOOTH).double()
    full, chunks, steps = one_call_chunks_steps(
        neuron, torch.randn(T, 2, 3, dtype=torch.float64), cuts
    )
    torch.testing.assert_close(chunks, full)
    torch.testing.assert_close(steps, full)


@SETTINGS
@given(T=st.integers(1, 14), k=st.integers(1, 8), data=st.data())
def test_sliding_psn_chunks_and_single_steps(T, k, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, T - 1)), max_size=3)))
    neuron = SlidingPSN(k, exp_init=data.draw(st.booleans()), surrogate_function=SMOOTH)
    x = torch.randn(T, 3, 2, 2, dtype=torch.float64)
    full, chunks, steps = one_call_chunks_steps(neuron.double(), x, cuts)
    torch.testing.assert_close(chunks, full)
    torch.testing.assert_close(steps, full)


@SETTINGS
@given(
    T=st.integers(1, 9),
    C=st.integers(1, 4),
    k=st.integers(1, 5),
    dilation=st.integers(1, 3),
    spatial=st.sampled_from([(), (2,), (2, 3)]),
    threshold=st.sampled_from(["bn", "learnable"]),
)
def test_mfpsn_output_is_binary_and_shaped_like_input(T, C, k, dilation, spatial, threshold):
    neuron = MFPSN(k, dilation=dilation, threshold=threshold, step_mode="m")
    x = torch.randn(T, 2, C, *spatial, requires_grad=True)
    out = neuron(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(neuron.weight.grad).all()


@SETTINGS
@given(T=st.integers(1, 8), N=st.integers(1, 4), rest=st.lists(st.integers(1, 3), max_size=3))
def test_psn_output_binary_and_shaped(T, N, rest):
    x = torch.randn(T, N, *rest)
    out = PSN(T)(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}


def test_strided_and_expanded_inputs_match_contiguous():
    torch.manual_seed(0)
    base = torch.randn(3, 6, 4)
    expanded = base[0:1].expand(5, 6, 4)  # stride 0 along T, as SpikingJelly's static encoding
    strided = torch.randn(5, 4, 6).transpose(1, 2)
    for x in (expanded, strided):
        for neuron in (
            PSN(5),
            MaskedPSN(2, 5, 0.3, step_mode="m"),
            SlidingPSN(3, step_mode="m"),
            MFPSN(2, channels=4, step_mode="m").eval(),
        ):
            assert torch.equal(neuron(x), neuron(x.contiguous()))
