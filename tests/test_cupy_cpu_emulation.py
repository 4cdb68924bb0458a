"""The CUDA kernels' device code, compiled as C++ and run on the CPU, against the reference ops.

Same .cu/.cuh sources as the GPU build (see tests/cupy_support). By default each emulated block
has one thread, so the deterministic partial buffers hold per-thread partial sums; the
real-block-shape tests run every thread of the launcher's blocks.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from cupy_support.emulation import Emulator, build, compiler
from cupy_support.inputs import conv_inputs, generator
from spikingjelly.activation_based import surrogate
from torch._subclasses.fake_tensor import FakeTensorMode

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.ops import reference, surrogates
from spikingjelly_psn.ops.cupy import _host, _launch, _source

pytestmark = pytest.mark.skipif(compiler() is None, reason="g++ is not installed")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="session")
def emu() -> Emulator:
    return Emulator(build())


# ---------------------------------------------------------------- scalar device functions


def _special_floats() -> torch.Tensor:
    g = generator(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (4000,), generator=g, dtype=torch.int64)
    randoms = bits.to(torch.int32).view(torch.float32)
    fixed = torch.tensor(
        [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 70000.0, 2**-14, 2**-24, 2**-25,
         1.5 * 2**-25, 3 * 2**-26, 2**-26, 1e-45, -1e-45, 1e-40, 3.4e38, -3.4e38,
         float("inf"), -float("inf"), 1.0009765625, 1.00048828125, 1.00146484375],
        dtype=torch.float32,
    )  # fmt: skip
    scaled = torch.randn(2000, generator=g) * torch.logspace(-30, 6, 2000)
    return torch.cat([fixed, randoms, scaled, torch.randn(1000, generator=g) * 2**-20])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_storage_conversions_match_torch(emu, dtype):
    x = _special_floats()
    x = x[~torch.isnan(x)]
    narrow = emu.convert(x, dtype)
    assert torch.equal(narrow.view(torch.int16), x.to(dtype).view(torch.int16))
    pattern = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    wide, expected = emu.widen(pattern), pattern.float()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(wide), nan)
    assert torch.equal(wide[~nan].view(torch.int32), expected[~nan].view(torch.int32))


def _exact_scaled(x: torch.Tensor, e: int) -> torch.Tensor:
    """x · 2^e with one rounding: exact in float64, then rounded to float32."""
    return (x.double() * math.ldexp(1.0, e)).float()


def test_exponent_arithmetic_is_bit_identical_to_multiplying(emu):
    xs = _special_floats()[::7].tolist() + [float("nan"), 2**-149, -(2**-149), 2**-126, 1.75]
    exponents = [-300, -160, -149, -127, -126, -40, -24, -1, 0, 1, 2, 24, 100, 127, 128, 254, 300]
    for e in exponents:
        x = torch.tensor(xs, dtype=torch.float32)
        got = torch.tensor([emu.lib.emu_ldexp(v, e) for v in x.tolist()], dtype=torch.float32)
        want = _exact_scaled(x, e)
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(got), nan), e
        assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32)), e


def _pow2_codes(emu, weights: torch.Tensor) -> list[int]:
    return [emu.lib.emu_pow2_code(w) for w in weights.tolist()]


def test_pow2_code_is_the_frexp_exponent(emu):
    """Tap code (bit 0 sign, bit 1 non-zero, bits 2.. exponent) as computed on the device."""
    g = generator(3)
    weights = torch.cat([
        torch.ldexp(torch.ones(277), torch.arange(-149, 128)), -torch.ldexp(torch.ones(5), torch.arange(-3, 2)),
        torch.randn(200, generator=g) * torch.logspace(-40, 30, 200), torch.tensor([0.0, -0.0]),
    ])  # fmt: skip
    _, exponent = torch.frexp(weights)
    sign = torch.signbit(weights).to(torch.int32)
    want = torch.where(weights != 0, (exponent - 1) * 4 + 2 + sign, sign)
    assert _pow2_codes(emu, weights) == want.tolist()


def test_pow2_taps_equal_float_multiplies(emu):
    exps = torch.arange(-149, 128)
    weights = torch.cat(
        [torch.ldexp(torch.ones(len(exps)), exps), -torch.ldexp(torch.ones(10), exps[:10])]
    )
    weights = torch.cat([weights, torch.tensor([0.0, -0.0])])
    x = torch.tensor([1.0, -3.0, 1e-40, -(2**-149), 3.3e38, 0.0, 1.2345678])
    for w, code in zip(weights.tolist(), _pow2_codes(emu, weights)):
        got = torch.tensor([emu.lib.emu_apply_tap(v, code) for v in x.tolist()])
        want = x * torch.tensor(w, dtype=torch.float32)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), w


def _surrogate_cases():
    return [
        surrogate.ATan(), surrogate.ATan(alpha=5.0), surrogate.Sigmoid(), surrogate.Sigmoid(0.7),
        surrogate.PiecewiseQuadratic(1.5), surrogate.PiecewiseExp(2.0), surrogate.SoftSign(3.0),
        surrogate.SuperSpike(1.3), surrogate.NonzeroSignLogAbs(2.0), surrogate.Erf(1.7),
        surrogate.PiecewiseLeakyReLU(0.8, 0.05), surrogate.SquarewaveFourierSeries(4, 6.0),
        surrogate.S2NN(3.0, 0.5), surrogate.QPseudoSpike(3.0), surrogate.LeakyKReLU(0.1, 0.9),
        surrogate.FakeNumericalGradient(0.4), surrogate.LogTailedReLU(0.2), surrogate.Rect(1.5),
        surrogate.DeterministicPass(),
    ]  # fmt: skip


def test_every_supported_surrogate_is_tested():
    assert {type(s).__name__ for s in _surrogate_cases()} == set(surrogates.SURROGATES)


@pytest.mark.parametrize("sg_fn", _surrogate_cases(), ids=lambda s: repr(s))
def test_surrogate_derivative_matches_spikingjelly_autograd(emu, sg_fn):
    x = torch.cat([torch.linspace(-3, 3, 1201), torch.tensor([0.0, -0.0, 1.0, -1e-3, 1e-3])])
    x = x.clone().requires_grad_(True)
    sg_fn(x).sum().backward()
    sg, params = surrogates.encode(sg_fn, "cupy")
    got = emu.surrogate(sg, x.detach(), params)
    torch.testing.assert_close(got, x.grad, rtol=2e-5, atol=1e-6)
    if sg in _host.INLINE_SURROGATES:  # the register-window backward's inline copy
        assert torch.equal(emu.surrogate(sg, x.detach(), params, common=True), got)


@pytest.mark.parametrize(
    "bad",
    [
        surrogate.ATan(spiking=False),
        surrogate.ATan(alpha=torch.tensor(2.0)),
        surrogate.PoissonPass(),
    ],
    ids=["not-spiking", "tensor-alpha", "poisson"],
)
def test_unsupported_surrogates_raise_listing_the_supported_ones(bad):
    with pytest.raises(ValueError, match="ATan|spiking") as info:
        surrogates.encode(bad, "cupy")
    if type(bad) is surrogate.PoissonPass:
        assert "surrogate.Sigmoid" in str(info.value)


# ---------------------------------------------------------------- causal conv + fire


def _conv_inputs(T, B, C, S, k, d, dtype, shared, with_history, pow2, seed):
    """The inputs of one CONV_CASES row: a shared weight has one row and one bias."""
    rows = 1 if shared else C
    history = with_history and (k - 1) * d > 0
    return conv_inputs(generator(seed), (T, B, C, S), k, d, dtype, weight_rows=rows,
                       bias_rows=rows, history=history, pow2=pow2, zero_fraction=0.1)  # fmt: skip


CONV_CASES = [
    # T, B, C, S, k, d, shared, history, pow2
    (8, 2, 3, 5, 3, 1, False, False, False),
    (7, 3, 2, 4, 4, 2, False, True, False),
    (1, 2, 3, 3, 5, 1, False, True, True),  # T = 1
    (3, 2, 2, 3, 6, 2, False, False, True),  # T < k
    (9, 2, 1, 6, 4, 1, True, True, False),  # sliding PSN: one channel, shared weight
    (5, 1, 4, 1, 3, 3, True, False, True),  # shared weight over channels, S = 1
    (21, 2, 2, 2, 8, 1, False, True, True),  # window 8, a remainder after full iterations
    (40, 2, 3, 4, 4, 1, False, True, False),  # window 4: iterations of 8 or 16 steps
    (37, 1, 2, 3, 16, 2, False, True, True),  # window 16
    (4, 1, 2, 2, 64, 1, False, True, False),  # k = 64: the generic kernels
]
WINDOW_IDS = {None: "launcher", _source.GENERIC_K: "generic"}


@pytest.mark.parametrize("window", [None, _source.GENERIC_K], ids=WINDOW_IDS.get)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_fire_forward_matches_reference_bitwise(emu, case, dtype, window):
    T, B, C, S, k, d, shared, with_history, pow2 = case
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, dtype, shared, with_history, pow2, seed=T + k)
    want = reference.causal_conv_fire(x, w, b, d, surrogate.ATan(), hist, pow2)
    got = emu.conv_fire(x, w, b, d, hist, pow2, window=window)
    assert got.dtype == dtype
    assert torch.equal(got, want)
    assert want.numel() < 50 or 0 < want.float().mean() < 1


def _awkward_inputs(shape, g: torch.Generator) -> torch.Tensor:
    """Inputs for every branch of the power-of-two taps: zeros, subnormals, values whose
    products leave the normal range, inf and NaN, among ordinary ones."""
    x = torch.randn(shape, generator=g)
    pick = torch.rand(shape, generator=g)
    specials = torch.tensor([0.0, -0.0, 1e-40, -3e-39, 2**-126, 3e38, -1e38, float("inf"),
                             -float("inf"), float("nan")])  # fmt: skip
    chosen = specials[torch.randint(len(specials), shape, generator=g)]
    return torch.where(pick < 0.15, chosen, x)


@pytest.mark.parametrize("k,d", [(3, 1), (4, 2), (7, 1), (16, 1), (20, 2)])
def test_pow2_taps_are_bit_identical_to_float_taps(emu, k, d):
    """Exponent arithmetic (fast integer add, or the general path) gives the spikes of float
    multiplies bit for bit, on every kind of input and for extreme exponents."""
    g = generator(100 + k)
    T, B, C, S = 40, 2, 6, 5
    x = _awkward_inputs((T, B, C, S), g)
    hist = _awkward_inputs(((k - 1) * d, B, C, S), g)
    exps = torch.randint(-30, 30, (C, k), generator=g)
    exps[0] = torch.tensor([-149, -126, 127, 100, -100] * k)[:k]  # products leave the range
    w = torch.ldexp(torch.ones(C, k), exps) * torch.where(
        torch.rand(C, k, generator=g) < 0.5, -1, 1
    )
    w[1, 0] = 0.0  # a channel with a zero tap
    b = torch.randn(C, generator=g)
    want = reference.causal_conv_fire(x, w, b, d, surrogate.ATan(), hist)
    float_taps = emu.conv_fire(x, w, b, d, hist, power_of_two=False)
    assert torch.equal(float_taps, want)
    for window in (None, _source.GENERIC_K):
        assert torch.equal(emu.conv_fire(x, w, b, d, hist, power_of_two=True, window=window), want)


def _reference_conv_grads(x, w, b, d, hist, grad_s, sg_fn):
    xr, wr, br = (t.detach().float().clone().requires_grad_(True) for t in (x, w, b))
    hr = None if hist is None else hist.float()
    s = reference.causal_conv_fire(xr, wr, br, d, sg_fn, hr)
    s.backward(grad_s.float())
    return xr.grad, wr.grad, br.grad


def _expected_partials(x, w, b, d, hist, grad_s, sg_fn):
    """Per-column partial sums [C, B*S, k+1] of the weight (taps) and bias gradients."""
    k = w.shape[1]
    h = reference.causal_conv_charge(x, w, d, hist) + b.float().view(1, 1, -1, 1)
    h = h.detach().requires_grad_(True)
    sg_fn(h).backward(grad_s.float())
    g = h.grad  # [T, B, C, S]
    T = x.shape[0]
    xp = reference._padded(x, hist, (k - 1) * d).float()
    taps = [(g * xp[i * d : i * d + T]).sum(0) for i in range(k)] + [g.sum(0)]
    return torch.stack(taps, -1).permute(1, 0, 2, 3).reshape(x.shape[2], -1, k + 1)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_fire_backward_matches_reference(emu, case, dtype):
    T, B, C, S, k, d, shared, with_history, pow2 = case
    x, w, b, hist = _conv_inputs(
        T, B, C, S, k, d, dtype, shared, with_history, pow2, seed=3 * T + k
    )
    grad_s = torch.randn(x.shape, generator=generator(7)).to(dtype)
    sg_fn = surrogate.Sigmoid(alpha=2.0) if k % 2 else surrogate.ATan()
    sg, params = surrogates.encode(sg_fn, "cupy")
    grad_x, partial, gwb = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist)
    grad_w, grad_b = _host.split_weight_bias_grad(gwb, w, b)
    want_x, want_w, want_b = _reference_conv_grads(x, w, b, d, hist, grad_s, sg_fn)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(grad_x.float(), want_x, **tol)
    torch.testing.assert_close(grad_w, want_w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_b, want_b, rtol=1e-4, atol=1e-4)
    want_partial = _expected_partials(x, w, b.reshape(-1).expand(C), d, hist, grad_s, sg_fn)
    torch.testing.assert_close(partial, want_partial, rtol=1e-4, atol=1e-5)
    # the generic kernel: the same grad_x bit for bit (same sums in the same order), the tap
    # sums in another order
    generic = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist, window=_source.GENERIC_K)
    assert torch.equal(generic[0], grad_x)
    torch.testing.assert_close(generic[1], partial, rtol=1e-5, atol=1e-5)
    # atomics mode: the same sums, in another order
    atomic = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist, deterministic=False)
    torch.testing.assert_close(atomic[2], gwb, rtol=1e-5, atol=1e-5)


def test_other_surrogates_take_the_generic_backward(emu):
    T, B, C, S, k, d = 11, 2, 3, 4, 4, 2
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, torch.float32, False, True, False, seed=8)
    grad_s = torch.randn(x.shape, generator=generator(9))
    for sg_fn in (surrogate.Erf(), surrogate.SquarewaveFourierSeries(), surrogate.S2NN()):
        sg, params = surrogates.encode(sg_fn, "cupy")
        assert _host.bwd_window(k, _source.MODE_FIRE, sg) == _source.GENERIC_K
        grad_x, _, gwb = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist)
        want_x, want_w, _ = _reference_conv_grads(x, w, b, d, hist, grad_s, sg_fn)
        torch.testing.assert_close(grad_x, want_x, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            _host.split_weight_bias_grad(gwb, w, b)[0], want_w, rtol=1e-4, atol=1e-4
        )
    assert _host.bwd_window(k, _source.MODE_STATS, 7) == _host.bwd_window(k, 0, 0) == 4


def test_conv_fire_chunked_stream_equals_one_call(emu):
    T, B, C, S, k, d = 12, 2, 3, 4, 3, 2
    x, w, b, _ = _conv_inputs(T, B, C, S, k, d, torch.float32, False, False, False, seed=11)
    lag = (k - 1) * d
    whole = emu.conv_fire(x, w, b, d)
    hist = torch.zeros(lag, B, C, S)
    chunks = []
    for part in x.split([5, 1, 6]):
        chunks.append(emu.conv_fire(part, w, b, d, hist))
        hist = torch.cat([hist, part])[-lag:].contiguous()
    assert torch.equal(torch.cat(chunks), whole)


# ---------------------------------------------------------------- real launch shapes

GPU_LAUNCH_CASES = [
    # T, B, C, S, k, d, shared, history: block shapes the launcher picks
    (6, 3, 40, 1, 3, 2, False, True),  # [T, N, C]: 32 channels per block, a partial channel tile
    (5, 70, 5, 1, 4, 1, False, False),  # 8 channels x 32 rows, a partial row block
    (4, 3, 2, 45, 2, 3, True, True),  # one channel per block, 128 rows, a partial row block
    (7, 5, 3, 2, 3, 1, False, False),  # S = 2: channels side by side
    (13, 3, 33, 1, 12, 1, False, True),  # window 16: tap rows per channel of the block
    (9, 2, 2, 9, 20, 1, False, False),  # the generic kernels (global scratch)
]


@pytest.mark.parametrize("case", GPU_LAUNCH_CASES)
@pytest.mark.parametrize("descending", [False, True])
def test_conv_kernels_with_real_block_shapes(emu, case, descending):
    """Every thread of the launcher's blocks emulated between barriers (in both orders): the
    same grad_x and spikes bit for bit as one thread per block, the same reduced sums."""
    T, B, C, S, k, d, shared, with_history = case
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, torch.float32, shared, with_history, False, 21)
    gpu = Emulator(emu.lib, launch="gpu", descending=descending)
    for pow2 in (False, True):
        wp = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs()))) if pow2 else w
        assert torch.equal(
            gpu.conv_fire(x, wp, b, d, hist, pow2), emu.conv_fire(x, wp, b, d, hist, pow2)
        )
    grad_s = torch.randn(x.shape, generator=generator(22))
    sg, params = surrogates.encode(surrogate.ATan(), "cupy")
    one = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist)
    for deterministic in (True, False):
        got = gpu.conv_backward(grad_s, x, w, b, d, sg, params, hist, deterministic=deterministic)
        assert torch.equal(got[0], one[0])
        assert not deterministic or not torch.isnan(got[1]).any()  # every block row written
        torch.testing.assert_close(got[2], one[2], rtol=1e-5, atol=1e-5)
    mean, var = gpu.conv_stats(x, w, d, hist)
    want_mean, want_var = emu.conv_stats(x, w, d, hist)
    torch.testing.assert_close(mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, want_var, rtol=1e-4, atol=1e-6)
    c1, c2 = _host.stats_grad_coefficients(torch.ones(C), torch.ones(C), mean, T * B * S)
    got = gpu.conv_backward(None, x, w, None, d, 0, (0.0,) * 3, hist, stats=(mean, c1, c2))
    want = emu.conv_backward(None, x, w, None, d, 0, (0.0,) * 3, hist, stats=(mean, c1, c2))
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-5)


def test_launch_shapes_respect_the_gpu_limits():
    """Block <= 256 threads, dynamic shared memory <= 48 KiB (no opt-in), grid.y <= 65535,
    for every window and layout; the shapes do not depend on T."""
    for channels, positions in [(1, 1), (3, 1), (40, 1), (65535, 1), (7, 2), (64, 3), (2, 1024)]:
        for columns in (1, 31, 32, 33, 255, 256, 257, 10**6):
            block = _host.conv_block(columns, channels, positions)
            threads = block[0] * block[1]
            assert 32 <= threads <= _host.MAX_BLOCK
            grid = _host.conv_grid(columns, channels, block)
            assert grid[0] * block[1] >= columns and grid[1] * block[0] >= channels
            for window in (*_source.WINDOWS, _source.GENERIC_K):
                for smem in (
                    _host.conv_bwd_smem(block, window),
                    _host.conv_stats_smem(block, window),
                    _host.conv_fwd_smem(threads, window),
                ):
                    _launch.check_launch(grid, block, smem)
    with pytest.raises(RuntimeError, match="invalid launch"):
        _launch.check_launch((1, 65536), (1, 32), 0)
    with pytest.raises(RuntimeError, match="invalid launch"):
        _launch.check_launch((1, 1), (1, 32), 48 * 1024 + 4)


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("case", CONV_CASES[:6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_stats_and_their_backward_match_reference(emu, case, dtype):
    T, B, C, S, k, d, shared, with_history, _ = case
    x, w, _, hist = _conv_inputs(T, B, C, S, k, d, dtype, shared, with_history, False, seed=5 + T)
    mean, var = emu.conv_stats(x, w, d, hist)
    xr, wr = (t.detach().float().clone().requires_grad_(True) for t in (x, w))
    want_mean, want_var = reference.conv_channel_stats(
        xr, wr, d, None if hist is None else hist.float()
    )
    torch.testing.assert_close(mean, want_mean.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, want_var.detach(), rtol=1e-4, atol=1e-5)
    g = generator(9)
    grad_mean, grad_var = torch.randn(C, generator=g), torch.randn(C, generator=g)
    ((want_mean * grad_mean).sum() + (want_var * grad_var).sum()).backward()
    c1, c2 = _host.stats_grad_coefficients(grad_mean, grad_var, mean, T * B * S)
    grad_x, _, gwb = emu.conv_backward(
        None, x, w, None, d, 0, (0.0, 0.0, 0.0), hist, stats=(mean, c1, c2)
    )
    generic = emu.conv_backward(
        None, x, w, None, d, 0, (0.0,) * 3, hist, stats=(mean, c1, c2), window=_source.GENERIC_K
    )
    assert torch.equal(generic[0], grad_x)
    grad_w, _ = _host.split_weight_bias_grad(gwb, w, None)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-3}
    torch.testing.assert_close(grad_x.float(), xr.grad, **tol)
    torch.testing.assert_close(grad_w, wr.grad, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- dense


DENSE_SHAPES = [(4, 4, 37), (6, 3, 5), (1, 1, 9), (16, 16, 65), (32, 32, 40), (70, 9, 11)]


@pytest.mark.parametrize("shape", DENSE_SHAPES)  # [T_out, T_in, M]: windows 8, 16, 32 and generic
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_fire_matches_reference(emu, shape, dtype):
    t_out, t_in, m = shape
    g = generator(t_out * 100 + m)
    x = torch.randn(t_in, m, generator=g).to(dtype)
    w = (torch.randn(t_out, t_in, generator=g) / math.sqrt(t_in)).to(dtype)
    b = (torch.randn(t_out, 1, generator=g) * 0.2).to(dtype)
    exact = torch.addmm(b.double(), w.double(), x.double())
    margin = exact.abs() > (1e-4 if dtype == torch.float32 else 3e-2)
    got = emu.dense_fire(x, w, b)
    assert got.dtype == dtype
    assert torch.equal(got[margin], (exact >= 0).to(dtype)[margin])
    want = reference.dense_fire(x.float(), w.float(), b.float(), surrogate.ATan())
    assert torch.equal(got[margin], want.to(dtype)[margin])
    # the generic kernel and the launcher's block shape: the same sums, the same spikes
    gpu = Emulator(emu.lib, launch="gpu")
    assert torch.equal(emu.dense_fire(x, w, b, window=_source.GENERIC_K), got)
    assert torch.equal(gpu.dense_fire(x, w, b), got)
    for sg_fn in (surrogate.ATan(), surrogate.Sigmoid(), surrogate.Erf()):
        grad_s = torch.randn(t_out, m, generator=g).to(dtype)
        xr, wr, br = (t.float().clone().requires_grad_(True) for t in (x, w, b))
        reference.dense_fire(xr, wr, br, sg_fn).backward(grad_s.float())
        sg, params = surrogates.encode(sg_fn, "cupy")
        grad_x, gh = emu.dense_backward(grad_s, x, w, b, sg, params)
        tol = (
            {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
        )
        torch.testing.assert_close(grad_x.float(), xr.grad, **tol)
        torch.testing.assert_close(gh @ x.float().t(), wr.grad, **tol)
        torch.testing.assert_close(gh.sum(1, keepdim=True), br.grad, **tol)
        generic = emu.dense_backward(grad_s, x, w, b, sg, params, window=_source.GENERIC_K)
        assert torch.equal(generic[0], grad_x) and torch.equal(generic[1], gh)
        on_gpu_blocks = gpu.dense_backward(grad_s, x, w, b, sg, params)
        assert torch.equal(on_gpu_blocks[0], grad_x) and torch.equal(on_gpu_blocks[1], gh)


def test_dense_windows():
    assert [_source.dense_window(t, t) for t in (1, 8, 9, 16, 17, 32, 33, 64)] == [
        8, 8, 16, 16, 32, 32, 0, 0,
    ]  # fmt: skip
    assert _source.dense_window(4, 65) == 0  # W would not fit the shared rows


# ---------------------------------------------------------------- host-side behaviour


def test_cpu_tensors_are_rejected_with_the_fix():
    x, w, b = torch.randn(4, 2, 3, 1), torch.ones(3, 2), torch.zeros(3)
    with pytest.raises(RuntimeError, match=r"\.cuda\(\).*backend=\"torch\""):
        cupy_ops.causal_conv_fire(x, w, b, 1, surrogate.ATan())
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        cupy_ops.dense_fire(torch.randn(4, 5), torch.eye(4), torch.zeros(4, 1), surrogate.ATan())
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        cupy_ops.conv_channel_stats(x, w, 1)


def test_an_op_call_without_cupy_raises_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"pip install \"spikingjelly-psn\[cupy13\]\""):
        cupy_ops.dense_fire(torch.randn(4, 5), torch.eye(4), torch.zeros(4, 1), surrogate.ATan())


def test_no_gpu_raises_runtime_error(monkeypatch):
    monkeypatch.setattr(_launch, "gpu_available", lambda: False)
    with FakeTensorMode():  # CUDA tensors without a GPU
        x = torch.empty(4, 8, device="cuda")
        w, b = torch.empty(4, 4, device="cuda"), torch.empty(4, 1, device="cuda")
    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        cupy_ops.dense_fire(x, w, b, surrogate.ATan())


def test_deterministic_switch(monkeypatch):
    monkeypatch.setattr(cupy_ops, "_DETERMINISTIC", False)
    assert not cupy_ops.deterministic()
    cupy_ops.set_deterministic(True)
    assert cupy_ops.deterministic()
    env = {"SPIKINGJELLY_PSN_DETERMINISTIC": "1"}
    code = "import spikingjelly_psn.ops.cupy as c; assert c.deterministic()"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **env})
