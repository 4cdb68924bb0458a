"""The torch backend (``ops.fast``) against the exact reference (``ops.reference``) and SpikingJelly.

The two compute the same sums in different orders (GEMMs over Toeplitz tiles, fused
multiply-adds, blocked reductions), so charges agree within the classic bound for summing
``m`` products in either order: ``|fast − ref| ≤ 2·γ_m·Σ|w·x|`` with ``γ_m ≈ m·u`` (``u`` the
unit roundoff of the accumulation dtype, ``m`` taps plus the bias). Spikes agree wherever the
reference charge is farther from the threshold than that bound; gradients agree to a tolerance
of the same origin. In float64 everything agrees to ~1e-12, which checks the indexing exactly.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate

from spikingjelly_psn.ops import backends, fast, reference
from spikingjelly_psn.ops.fast import blocks
from spikingjelly_psn.ops.fast.blocks import Blocking
from spikingjelly_psn.ops.fast.firing import LeanATan, strategy
from spikingjelly_psn.ops.quantize import quantize_power_of_two


class Identity(torch.nn.Module):
    """A "surrogate" returning the charge itself, so the ops' charges can be compared."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h


SPIKING = surrogate.ATan()
SMOOTH = surrogate.ATan(spiking=False)

# (T, B, C, S, k, dilation): odd sizes; S >= 64 blocks as strided views, S < 64 packed;
# T > 16 + lag is cut into time tiles; k = 1 has no lag.
CONV_CASES = [
    (1, 2, 3, 5, 3, 1),
    (7, 1, 2, 70, 3, 2),
    (13, 3, 4, 1, 5, 1),
    (40, 2, 3, 20, 4, 3),
    (37, 5, 2, 3, 2, 1),
    (19, 1, 1, 9, 1, 1),
    (50, 2, 5, 1, 16, 3),
]


@pytest.fixture(params=["one block", "many blocks"])
def block_size(request, monkeypatch):
    """Default cache-sized blocks, and tiny ones so every small case spans many blocks (and
    views even with few columns; a shared weight takes the blocked path, not the dense one)."""
    if request.param == "many blocks":
        monkeypatch.setitem(blocks.BLOCK_BYTES, "cpu", 2048)
        monkeypatch.setattr(blocks, "MIN_COLUMNS", 4)
        monkeypatch.setattr(fast, "DENSE_SHARED_BYTES", 0)
    return request.param


def _unit(dtype: torch.dtype) -> float:
    return torch.finfo(reference.accumulation_dtype(torch.empty(0, dtype=dtype))).eps / 2


def _bound(x, w, b, d, history, taps: int) -> torch.Tensor:
    """2·γ·Σ|w·x| per charge element (``taps`` products and the bias in one sum)."""
    wide = reference.accumulation_dtype(x, w)
    absolute = reference.causal_conv_charge(
        x.to(wide).abs(), w.to(wide).abs(), d, None if history is None else history.abs()
    )
    m = taps + 1
    u = _unit(x.dtype)
    return 2 * m * u / (1 - m * u) * (absolute + b.to(wide).abs().view(1, 1, -1, 1))


def _inputs(T, B, C, S, k, d, dtype, history, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    lag = (k - 1) * d

    def make(*shape):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        return t.requires_grad_(requires_grad)

    x, w, b = make(T, B, C, S), make(C, k), make(C)
    h = make(lag, B, C, S) if history and lag else None
    return x, w, b, h


def _assert_spikes_close(fast_s, ref_s, ref_charge, bound):
    differ = fast_s != ref_s
    assert (ref_charge[differ].abs() <= bound[differ]).all(), "a spike flipped away from 0"


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("history", [False, True])
def test_conv_charge_and_spikes_within_the_rounding_bound(block_size, case, history):
    T, B, C, S, k, d = case
    x, w, b, h = _inputs(*case, torch.float32, history, seed=sum(case))
    ref_h = reference.causal_conv_fire(x, w, b, d, Identity(), h)
    fast_h = fast.causal_conv_fire(x, w, b, d, Identity(), h)
    bound = _bound(x, w, b, d, h, k)
    assert (fast_h - ref_h).abs().le(bound).all()
    fast_s = fast.causal_conv_fire(x, w, b, d, SPIKING, h)
    assert fast_s.dtype == x.dtype and set(fast_s.unique().tolist()) <= {0.0, 1.0}
    _assert_spikes_close(fast_s, reference.causal_conv_fire(x, w, b, d, SPIKING, h), ref_h, bound)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize(
    "sg", [SPIKING, SMOOTH, surrogate.Sigmoid()], ids=["atan", "smooth", "sigmoid"]
)
def test_conv_gradients_match_in_float64(block_size, case, history, sg):
    """Every gradient (x, weight, bias, history) through the lean and the generic surrogate."""
    T, B, C, S, k, d = case
    x, w, b, h = _inputs(*case, torch.float64, history, seed=sum(case) + 1, requires_grad=True)
    inputs = [t for t in (x, w, b, h) if t is not None]
    out_f = fast.causal_conv_fire(x, w, b, d, sg, h)
    out_r = reference.causal_conv_fire(x, w, b, d, sg, h)
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(out_f)
    for got, want in zip(
        torch.autograd.grad(out_f, inputs, upstream), torch.autograd.grad(out_r, inputs, upstream)
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CONV_CASES[1:4])
def test_conv_gradients_in_float32(case):
    """fp32: the surrogate gradient sees charges off by the rounding bound, and the weight
    gradient sums T·B·S products in blocks; a relative 1e-4 covers both at these sizes."""
    T, B, C, S, k, d = case
    x, w, b, h = _inputs(*case, torch.float32, True, seed=7, requires_grad=True)
    inputs = [t for t in (x, w, b, h) if t is not None]
    smooth = [
        fn(x, w, b, d, SMOOTH, h) for fn in (fast.causal_conv_fire, reference.causal_conv_fire)
    ]
    upstream = torch.randn_like(smooth[0])
    got, want = (torch.autograd.grad(s, inputs, upstream) for s in smooth)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CONV_CASES[1:4])
def test_conv_half_precision_accumulates_in_float32(case, dtype):
    """Half inputs: charges in fp32 (as the reference), spikes and input gradient in x.dtype."""
    T, B, C, S, k, d = case
    x, w, b, h = _inputs(*case, dtype, True, seed=3)
    w, b = w.float(), b.float()
    ref_h = reference.causal_conv_fire(x, w, b, d, Identity(), h)  # fp32 charge, cast to dtype
    wide_h = reference.causal_conv_charge(x, w, d, h) + b.view(1, 1, -1, 1)
    fast_s = fast.causal_conv_fire(x, w, b, d, SPIKING, h)
    assert fast_s.dtype == dtype and ref_h.dtype == dtype
    _assert_spikes_close(
        fast_s, reference.causal_conv_fire(x, w, b, d, SPIKING, h), wide_h, _bound(x, w, b, d, h, k)
    )
    xg = x.detach().requires_grad_()
    (grad_fast,) = torch.autograd.grad(fast.causal_conv_fire(xg, w, b, d, SMOOTH, h).sum(), xg)
    (grad_ref,) = torch.autograd.grad(reference.causal_conv_fire(xg, w, b, d, SMOOTH, h).sum(), xg)
    assert grad_fast.dtype == dtype
    # both are fp32 sums (equal to ~1e-6) rounded once to dtype: one ulp of the largest term
    eps = torch.finfo(dtype).eps
    tol = eps * grad_ref.float().abs().max().item()
    torch.testing.assert_close(grad_fast, grad_ref, rtol=eps, atol=tol)


def test_lean_surrogate_gradient_is_spikingjellys_bit_for_bit(block_size):
    """The in-place ATan gradient runs SpikingJelly's ops in its order: identical to autograd."""
    x, w, b, _ = _inputs(24, 2, 3, 70, 4, 2, torch.float32, False, seed=5, requires_grad=True)
    lean = fast.causal_conv_fire(x, w, b, 2, SPIKING, None)
    assert isinstance(strategy(SPIKING), LeanATan)
    hooked = surrogate.ATan()
    hooked.register_forward_hook(lambda *a: None)  # a hook forces the generic path
    generic = fast.causal_conv_fire(x, w, b, 2, hooked, None)
    upstream = torch.randn_like(lean)
    for a, r in zip(
        torch.autograd.grad(lean, [x, w, b], upstream),
        torch.autograd.grad(generic, [x, w, b], upstream),
    ):
        assert torch.equal(a, r)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("history", [False, True])
def test_channel_stats_and_their_gradients(block_size, case, history):
    T, B, C, S, k, d = case
    for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 2e-5)):
        x, w, _, h = _inputs(*case, dtype, history, seed=11, requires_grad=True)
        inputs = [t for t in (x, w, h) if t is not None]
        got, want = fast.conv_channel_stats(x, w, d, h), reference.conv_channel_stats(x, w, d, h)
        assert got[0].dtype == want[0].dtype == reference.accumulation_dtype(x)
        scale = want[1].abs().max().item() + want[0].abs().max().item()
        for a, r in zip(got, want):
            torch.testing.assert_close(a, r, rtol=tol, atol=tol * scale)
        coef = torch.linspace(-1, 1, C, dtype=got[0].dtype)
        loss_f = (got[0] * coef).sum() + (got[1] * coef.flip(0)).sum()
        loss_r = (want[0] * coef).sum() + (want[1] * coef.flip(0)).sum()
        for a, r in zip(torch.autograd.grad(loss_f, inputs), torch.autograd.grad(loss_r, inputs)):
            torch.testing.assert_close(a, r, rtol=100 * tol, atol=100 * tol * r.abs().max().item())


def test_channel_stats_of_a_shifted_input_keep_their_precision():
    """Per-block statistics combined by the parallel formula: no E[H²] − μ² cancellation."""
    x, w, _, _ = _inputs(20, 4, 3, 90, 3, 1, torch.float32, False, seed=2)
    x = x + 1000.0
    got, want = (
        fast.conv_channel_stats(x, w, 1),
        reference.conv_channel_stats(x.double(), w.double(), 1),
    )
    torch.testing.assert_close(got[1].double(), want[1], rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x[0:1].expand_as(x),  # stride 0 along T
        lambda x: x.transpose(1, 3).contiguous().transpose(1, 3),
        lambda x: x[:, :, :, ::2].repeat_interleave(2, dim=3)[..., : x.shape[3]],
    ],
)
def test_strided_and_expanded_inputs(make):
    x, w, b, h = _inputs(20, 2, 3, 66, 3, 2, torch.float32, True, seed=4)
    y = make(x)
    for fn in (
        lambda t: fast.causal_conv_fire(t, w, b, 2, SPIKING, h),
        lambda t: fast.causal_conv_fire(t, w[:1], b[:1], 2, SPIKING, h),
        lambda t: fast.conv_channel_stats(t, w, 2, h)[1],
    ):
        assert torch.equal(fn(y), fn(y.contiguous()))


# ------------------------------------------------------------------ chunked streaming


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("k, d", [(4, 1), (3, 3), (1, 1)])
def test_chunks_equal_one_call_up_to_rounding(block_size, shared, k, d):
    """A sequence fed in chunks (each with the previous lag steps as history) gives the charges
    of one call within the rounding bound, and the same spikes away from the threshold.
    Not bit for bit: BLAS picks its kernels, and with them the summation order, by shape."""
    T, B, C, S = 41, 2, 3, 5
    x, w, b, _ = _inputs(T, B, C, S, k, d, torch.float32, False, seed=k + d)
    if shared:
        x, w, b = x.reshape(T, 1, 1, -1), w[:1], b[:1]
    lag = (k - 1) * d
    padded = torch.cat([x.new_zeros(lag, *x.shape[1:]), x])
    cuts = [0, 1, 2, 9, 30, T]
    chunks, spikes = [], []
    for a, c in zip(cuts, cuts[1:]):
        history = padded[a : a + lag] if lag else None
        chunks.append(fast.causal_conv_fire(x[a:c], w, b, d, Identity(), history))
        spikes.append(fast.causal_conv_fire(x[a:c], w, b, d, SPIKING, history))
    whole = fast.causal_conv_fire(x, w, b, d, Identity())
    bound = _bound(x, w, b, d, None, k)
    assert (torch.cat(chunks) - whole).abs().le(2 * bound).all()
    _assert_spikes_close(
        torch.cat(spikes), fast.causal_conv_fire(x, w, b, d, SPIKING), whole, 2 * bound
    )


# ------------------------------------------------------------------ SpikingJelly's GEMMs


def _sj_sliding(weight: torch.Tensor, T: int) -> torch.Tensor:
    """SpikingJelly's own Toeplitz matrix (its Python loop)."""
    sj = sj_neuron.SlidingPSN(weight.numel(), step_mode="m")
    with torch.no_grad():
        sj.weight.copy_(weight)
    return sj.gen_gemm_weight(T)


@pytest.mark.parametrize("T, k", [(1, 3), (5, 2), (16, 8), (33, 4)])
@pytest.mark.parametrize("autocast", [False, True])
def test_shared_weight_whole_sequence_is_spikingjellys_addmm(block_size, T, k, autocast):
    """The sliding PSN's charge is ``addmm(bias, W_toeplitz, x)``, as SpikingJelly computes it,
    so spikes and smooth outputs are bit for bit equal, also under CPU bf16 autocast."""
    torch.manual_seed(T + k)
    x = torch.randn(T, 1, 1, 50)
    w, b = torch.randn(1, k), torch.randn(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        want_h = torch.addmm(b, _sj_sliding(w[0], T), x.view(T, -1))
        for sg in (SPIKING, SMOOTH):
            got = fast.causal_conv_fire(x, w, b, 1, sg)
            assert got.dtype == want_h.dtype
            assert torch.equal(got.view(T, -1), sg(want_h))


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_dense_fire_is_spikingjellys_psn_bit_for_bit(autocast, transposed):
    """Spikes and every gradient equal SpikingJelly's autograd through addmm and ATan."""
    torch.manual_seed(1)
    T, M = 8, 300
    x = torch.randn(M, T).t() if transposed else torch.randn(T, M)  # column-major: another
    w = torch.randn(T, T).t() if transposed else torch.randn(T, T)  # orientation in autograd
    x.requires_grad_(True), w.requires_grad_(True)
    b = torch.randn(T, 1, requires_grad=True)
    upstream = torch.linspace(-1, 1, T * M).view(T, M)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        got = fast.dense_fire(x, w, b, SPIKING)
        want = SPIKING(torch.addmm(b, w, x))
    assert got.dtype == want.dtype and torch.equal(got, want)
    up = upstream.to(got.dtype)
    for a, r in zip(
        torch.autograd.grad(got, [x, w, b], up), torch.autograd.grad(want, [x, w, b], up)
    ):
        assert a.dtype == r.dtype and torch.equal(a, r)


def test_a_backward_run_inside_autocast_computes_what_it_computes_outside():
    """The ops choose their dtypes themselves, in the backward too."""
    x, w, b, _ = _inputs(20, 2, 3, 70, 3, 1, torch.float32, False, seed=8, requires_grad=True)
    dense_w = torch.randn(20, 20, requires_grad=True)
    dense_b = torch.randn(20, 1, requires_grad=True)
    for spikes, inputs in (
        (fast.causal_conv_fire(x, w, b, 1, SPIKING), [x, w, b]),
        (fast.conv_channel_stats(x, w, 1)[1], [x, w]),
        (fast.dense_fire(x.view(20, -1), dense_w, dense_b, SPIKING), [x, dense_w, dense_b]),
    ):
        upstream = torch.randn_like(spikes)
        outside = torch.autograd.grad(spikes, inputs, upstream, retain_graph=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = torch.autograd.grad(spikes, inputs, upstream)
        for a, r in zip(inside, outside):
            assert a.dtype == r.dtype and torch.equal(a, r)


# ------------------------------------------------------------------ float64 gradcheck


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [(5, 2, 3, 3, 3, 1), (21, 1, 2, 3, 2, 2), (19, 2, 1, 4, 3, 1)])
def test_gradcheck_conv_fire_and_stats(block_size, case):
    """The autograd functions' backward (recompute, generic surrogate, transposes, taps)."""
    T, B, C, S, k, d = case
    x, w, b, h = _inputs(*case, torch.float64, True, seed=9, requires_grad=True)
    _gradcheck(lambda x, w, b, h: fast.causal_conv_fire(x, w, b, d, SMOOTH, h), x, w, b, h)
    xs, ws, bs = x[:, :1, :1].detach().requires_grad_(), w[:1].detach(), b[:1].detach()
    hs = h[:, :1, :1].detach().requires_grad_()
    ws.requires_grad_(), bs.requires_grad_()
    _gradcheck(lambda x, w, b, h: fast.causal_conv_fire(x, w, b, d, SMOOTH, h), xs, ws, bs, hs)
    _gradcheck(lambda x, w, h: fast.conv_channel_stats(x, w, d, h), x, w, h)


def test_gradcheck_dense_fire_with_the_generic_surrogate():
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda *a: fast.dense_fire(*a, SMOOTH), x, w, b)


# ------------------------------------------------------------------ batch-norm threshold


def _bn_fold(quantize: bool):
    """MFPSN's fold: ``(Q(gamma·W/√(σ²+eps)), beta − gamma·μ/√(σ²+eps))``."""

    def fold(mean, var, weight, gamma, beta):
        scale = gamma * torch.rsqrt(var + 1e-5)
        folded = weight * scale[:, None]
        return (quantize_power_of_two(folded) if quantize else folded), beta - mean * scale

    return fold


def _bn_params(C: int, k: int, dtype: torch.dtype, seed: int, frozen: tuple[str, ...] = ()):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, k, generator=g, dtype=torch.float64)
    gamma = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(C, generator=g, dtype=torch.float64)
    named = {"weight": weight, "gamma": gamma, "beta": beta}
    return [t.to(dtype).requires_grad_(name not in frozen) for name, t in named.items()]


def _composed(x, params, fold, d, sg, history=None):
    """The reference: statistics, fold and firing as three differentiable steps."""
    mean, var = reference.conv_channel_stats(x, params[0], d, history)
    folded_weight, folded_bias = fold(mean, var, *params)
    return reference.causal_conv_fire(x, folded_weight, folded_bias, d, sg, history), mean, var


@pytest.fixture
def always_fused(monkeypatch):
    """Take the fused path on inputs of any size (it needs ``numel ≥ MOMENTS_FRACTION·C·T²``)."""
    monkeypatch.setattr(fast, "MOMENTS_FRACTION", 0)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("frozen", [(), ("gamma",), ("weight", "beta")])
def test_batchnorm_conv_fire_matches_the_composed_reference(
    block_size, always_fused, case, quantize, frozen
):
    """Float64: equal to the reference to ~1e-10. Float32: as close to the float64 result as
    the reference computed in float32 (within 4x its error: other sums, same rounding). The
    values are O(1); the floors are absolute, as the batch norm's gradients cancel to ~0."""
    T, B, C, S, k, d = case
    fold = _bn_fold(quantize)

    def run(dtype, op):
        x, _, _, _ = _inputs(*case, dtype, False, seed=12, requires_grad=True)
        params = _bn_params(C, k, dtype, seed=13, frozen=frozen)
        out = op(x, params)
        upstream = torch.linspace(-1, 1, x.numel(), dtype=dtype).view_as(x)
        inputs = [x, *(p for p in params if p.requires_grad)]
        grads = torch.autograd.grad(out[0], inputs, upstream)
        return [t.double() for t in (*out, *grads)], out[0].grad_fn.name()

    def fused(x, params):
        return fast.batchnorm_conv_fire(x, params[0], fold, tuple(params), d, SMOOTH)

    def composed(x, params):
        return _composed(x, params, fold, d, SMOOTH)

    exact, _ = run(torch.float64, composed)
    got64, name = run(torch.float64, fused)
    assert name == "BatchNormConvFireBackward"
    for a, r in zip(got64, exact):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10 * max(1.0, r.abs().max().item()))
    got32, _ = run(torch.float32, fused)
    composed32, _ = run(torch.float32, composed)
    for a, c, r in zip(got32, composed32, exact):
        bound = 4 * (c - r).abs().max().item() + 1e-6 * max(1.0, r.abs().max().item())
        assert (a - r).abs().max().item() <= bound


def test_batchnorm_conv_fire_with_the_lean_surrogate_and_no_input_gradient(always_fused):
    """Spiking ATan (in place) and an input that needs no gradient (a network's first layer)."""
    T, B, C, S, k, d = 24, 3, 4, 70, 4, 2
    fold = _bn_fold(True)
    x, _, _, _ = _inputs(T, B, C, S, k, d, torch.float64, False, seed=14)
    params = _bn_params(C, k, torch.float64, seed=15)
    got = fast.batchnorm_conv_fire(x, params[0], fold, tuple(params), d, SPIKING)
    want = _composed(x, params, fold, d, SPIKING)
    assert torch.equal(got[0], want[0])
    upstream = torch.randn_like(x)
    grads = torch.autograd.grad(got[0], params, upstream)
    for a, r in zip(grads, torch.autograd.grad(want[0], params, upstream)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10 * r.abs().max().item())


def test_gradcheck_batchnorm_conv_fire(always_fused):
    T, B, C, S, k, d = 9, 2, 3, 4, 3, 2
    x, _, _, _ = _inputs(T, B, C, S, k, d, torch.float64, False, seed=16, requires_grad=True)
    params = _bn_params(C, k, torch.float64, seed=17)
    fold = _bn_fold(False)
    _gradcheck(lambda x, *p: fast.batchnorm_conv_fire(x, p[0], fold, p, d, SMOOTH)[0], x, *params)


@pytest.mark.parametrize("why", ["history", "no gradient", "small input"])
def test_batchnorm_conv_fire_composes_where_fusing_does_not_pay(why):
    """With a history (streaming), without gradients, or when the moments' ``[C, T, T]``
    matrices are not small next to the input, the three steps run one after the other."""
    T, B, C, S, k, d = 16, 2, 3, 64, 3, 1
    x, _, _, h = _inputs(T, B, C, S, k, d, torch.float64, True, seed=18, requires_grad=True)
    params = _bn_params(C, k, torch.float64, seed=19)
    history = h if why == "history" else None
    if why == "small input":
        x = x[:, :1, :, :8]
    fold = _bn_fold(True)
    with torch.set_grad_enabled(why != "no gradient"):
        got = fast.batchnorm_conv_fire(x, params[0], fold, tuple(params), d, SMOOTH, history)
        want = _composed(x, params, fold, d, SMOOTH, history)
    if why != "no gradient":
        assert got[0].grad_fn.name() == "CausalConvFireBackward"
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ allocations


def test_a_training_step_allocates_its_results_and_little_else():
    """Only x is saved and the charge is recomputed: a forward and backward allocate the spikes,
    the input gradient (and the charge once more for the unblocked dense ops) plus small scratch,
    also with MFPSN's batch-norm threshold,
    where SpikingJelly's autograd allocates about 9 times the input (bench: ``alloc_ratio``)."""
    from spikingjelly_psn.bench.memory import allocated_bytes

    cpu = torch.device("cpu")
    x, w, b, _ = _inputs(32, 8, 16, 256, 8, 1, torch.float32, False, seed=6, requires_grad=True)
    upstream = torch.randn_like(x)

    def per_channel():
        spikes = fast.causal_conv_fire(x, w, b, 1, SPIKING)
        return torch.autograd.grad(spikes, [x, w, b], upstream)

    def statistics():
        mean, var = fast.conv_channel_stats(x, w, 1)
        return torch.autograd.grad(mean.sum() + var.sum(), [x, w])

    dense_w = torch.randn(32, 32, requires_grad=True)
    dense_b = torch.randn(32, 1, requires_grad=True)

    def dense():
        spikes = fast.dense_fire(x.view(32, -1), dense_w, dense_b, SPIKING)
        return torch.autograd.grad(spikes, [x, dense_w, dense_b], upstream.view(32, -1))

    gamma, beta = torch.ones(16, requires_grad=True), torch.zeros(16, requires_grad=True)

    def batchnorm():
        fold = _bn_fold(True)
        spikes, _, _ = fast.batchnorm_conv_fire(x, w, fold, (w, gamma, beta), 1, SPIKING)
        return torch.autograd.grad(spikes, [x, w, gamma, beta], upstream)

    assert allocated_bytes(per_channel, cpu) <= 2.5 * x.nbytes
    # one input gradient: the statistics' part is added to the firing's in place (the three
    # steps one after the other allocate 3.65x: a second input gradient)
    assert allocated_bytes(batchnorm, cpu) <= 2.75 * x.nbytes
    assert allocated_bytes(statistics, cpu) <= 1.5 * x.nbytes
    assert allocated_bytes(dense, cpu) <= 3.1 * x.nbytes


# ------------------------------------------------------------------ plumbing


def test_torch_backend_is_the_fast_module_and_the_reference_stays_reachable():
    assert backends.get("torch") is fast
    assert reference.causal_conv_charge is not None


@pytest.mark.parametrize("shape", [(9, 1, 1, 1000), (9, 7, 5, 3), (9, 300, 2, 1), (64, 2, 3, 80)])
def test_blocks_cover_every_element_once(shape, monkeypatch):
    monkeypatch.setitem(blocks.BLOCK_BYTES, "cpu", 4096)
    blocking = Blocking(torch.Size(shape), torch.float32, torch.device("cpu"), shape[0])
    seen = torch.zeros(shape, dtype=torch.int32)
    for block in blocking:
        blocking.view(seen, block).add_(1)
    assert (seen == 1).all()
    assert len(list(itertools.islice(blocking, 2))) == min(2, len(blocking.blocks))
