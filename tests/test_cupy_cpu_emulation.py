"""The CUDA kernels' device code, compiled as C++ and run on the CPU, against the reference ops.

Same .cu/.cuh sources as the GPU build (see tests/cupy_support); each emulated block has one
thread, so the deterministic partial buffers hold per-thread partial sums.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from cupy_support.emulation import Emulator, build, compiler
from spikingjelly.activation_based import surrogate
from torch._subclasses.fake_tensor import FakeTensorMode

import spikingjelly_psn.ops.cupy as cupy_ops
from spikingjelly_psn.ops import reference
from spikingjelly_psn.ops.cupy import _host, _launch, _surrogates

pytestmark = pytest.mark.skipif(compiler() is None, reason="g++ is not installed")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="session")
def emu() -> Emulator:
    return Emulator(build())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- scalar device functions


def _special_floats() -> torch.Tensor:
    g = _gen(0)
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


def test_pow2_taps_equal_float_multiplies(emu):
    exps = torch.arange(-149, 128)
    weights = torch.cat(
        [torch.ldexp(torch.ones(len(exps)), exps), -torch.ldexp(torch.ones(10), exps[:10])]
    )
    weights = torch.cat([weights, torch.tensor([0.0, -0.0])])
    codes = _host.pow2_codes(weights)
    x = torch.tensor([1.0, -3.0, 1e-40, -(2**-149), 3.3e38, 0.0, 1.2345678])
    for w, code in zip(weights.tolist(), codes.tolist()):
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
    assert {type(s).__name__ for s in _surrogate_cases()} == set(_surrogates.SURROGATES)


@pytest.mark.parametrize("sg_fn", _surrogate_cases(), ids=lambda s: repr(s))
def test_surrogate_derivative_matches_spikingjelly_autograd(emu, sg_fn):
    x = torch.cat([torch.linspace(-3, 3, 1201), torch.tensor([0.0, -0.0, 1.0, -1e-3, 1e-3])])
    x = x.clone().requires_grad_(True)
    sg_fn(x).sum().backward()
    sg, params = _surrogates.encode(sg_fn)
    got = emu.surrogate(sg, x.detach(), params)
    torch.testing.assert_close(got, x.grad, rtol=2e-5, atol=1e-6)


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
        _surrogates.encode(bad)
    if type(bad) is surrogate.PoissonPass:
        assert "surrogate.Sigmoid" in str(info.value)


# ---------------------------------------------------------------- causal conv + fire


def _conv_inputs(T, B, C, S, k, d, dtype, shared, with_history, pow2, seed):
    g = _gen(seed)
    x = torch.randn(T, B, C, S, generator=g).to(dtype)
    rows = 1 if shared else C
    w = torch.randn(rows, k, generator=g) * 0.7
    if pow2:
        w = torch.sign(w) * torch.exp2(torch.round(torch.log2(w.abs())))
        w[torch.rand(w.shape, generator=g) < 0.2] = 0.0
    b = torch.randn(rows if not shared else 1, generator=g) * 0.3
    lag = (k - 1) * d
    hist = torch.randn(lag, B, C, S, generator=g).to(dtype) if with_history and lag else None
    return x, w, b, hist


CONV_CASES = [
    # T, B, C, S, k, d, shared, history, pow2
    (8, 2, 3, 5, 3, 1, False, False, False),
    (7, 3, 2, 4, 4, 2, False, True, False),
    (1, 2, 3, 3, 5, 1, False, True, True),  # T = 1
    (3, 2, 2, 3, 6, 2, False, False, True),  # T < k
    (9, 2, 1, 6, 4, 1, True, True, False),  # sliding PSN: one channel, shared weight
    (5, 1, 4, 1, 3, 3, True, False, True),  # shared weight over channels, S = 1
    (4, 1, 2, 2, 64, 1, False, True, False),  # k = 64
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_fire_forward_matches_reference_bitwise(emu, case, dtype):
    T, B, C, S, k, d, shared, with_history, pow2 = case
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, dtype, shared, with_history, pow2, seed=T + k)
    want = reference.causal_conv_fire(x, w, b, d, surrogate.ATan(), hist, pow2)
    for wide in (False, True):
        got = emu.conv_fire(x, w, b, d, hist, pow2, wide=wide)
        assert got.dtype == dtype
        assert torch.equal(got, want)
    assert want.numel() < 50 or 0 < want.float().mean() < 1


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
    grad_s = torch.randn(x.shape, generator=_gen(7)).to(dtype)
    sg_fn = surrogate.Sigmoid(alpha=2.0) if k % 2 else surrogate.ATan()
    sg, params = _surrogates.encode(sg_fn)
    grad_x, partial, gwb = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist, pow2)
    grad_w, grad_b = _host.split_weight_bias_grad(gwb, w, b)
    want_x, want_w, want_b = _reference_conv_grads(x, w, b, d, hist, grad_s, sg_fn)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(grad_x.float(), want_x, **tol)
    torch.testing.assert_close(grad_w, want_w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_b, want_b, rtol=1e-4, atol=1e-4)
    want_partial = _expected_partials(x, w, b.reshape(-1).expand(C), d, hist, grad_s, sg_fn)
    torch.testing.assert_close(partial, want_partial, rtol=1e-4, atol=1e-5)
    # global scratch instead of shared memory, and 64-bit offsets: the same arithmetic, bit for bit
    same = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist, pow2, scratch=True, wide=True)
    assert torch.equal(same[0], grad_x) and torch.equal(same[1], partial)
    # atomics mode: the same sums, in another order
    atomic = emu.conv_backward(grad_s, x, w, b, d, sg, params, hist, pow2, deterministic=False)
    torch.testing.assert_close(atomic[2], gwb, rtol=1e-5, atol=1e-5)


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
    (400, 3, 2, 11, 3, 1, False, False),  # T > 383: global scratch with the full block
]


@pytest.mark.parametrize("case", GPU_LAUNCH_CASES)
@pytest.mark.parametrize("descending", [False, True])
def test_conv_kernels_with_real_block_shapes(emu, case, descending):
    """Every thread of the launcher's blocks emulated between barriers (in both orders): the
    same grad_x and spikes bit for bit as one thread per block, the same reduced sums."""
    T, B, C, S, k, d, shared, with_history = case
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, torch.float32, shared, with_history, False, 21)
    gpu = Emulator(emu.lib, launch="gpu", descending=descending)
    assert torch.equal(gpu.conv_fire(x, w, b, d, hist), emu.conv_fire(x, w, b, d, hist))
    grad_s = torch.randn(x.shape, generator=_gen(22))
    sg, params = _surrogates.encode(surrogate.ATan())
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
    """Block <= 1024 threads, dynamic shared memory <= 48 KiB (no opt-in), grid.y <= 65535,
    for every T the backward may see; the shared-memory path holds up to T = 383."""
    for channels, positions in [(1, 1), (3, 1), (40, 1), (65535, 1), (7, 2), (64, 3), (2, 1024)]:
        for columns in (1, 31, 32, 33, 255, 256, 257, 10**6):
            stats_block = _host.conv_block(columns, channels, positions)
            assert 32 <= stats_block[0] * stats_block[1] <= _host.MAX_BLOCK
            assert 3 * stats_block[0] * stats_block[1] * 4 <= _host.SMEM_LIMIT
            for n_t in (1, 2, 31, 100, 383, 384, 1000, 100000):
                block, smem, scratch = _host.conv_bwd_config(n_t, columns, channels, positions)
                threads = block[0] * block[1]
                grid = _host.conv_grid(columns, channels, block)
                _launch.check_launch(grid, block, smem)
                assert threads <= 1024 and smem <= _host.SMEM_LIMIT
                assert scratch == (n_t > 383)
                assert smem == (threads * 4 if scratch else (n_t + 1) * threads * 4)
                assert grid[0] * block[1] >= columns and grid[1] * block[0] >= channels
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
    g = _gen(9)
    grad_mean, grad_var = torch.randn(C, generator=g), torch.randn(C, generator=g)
    ((want_mean * grad_mean).sum() + (want_var * grad_var).sum()).backward()
    c1, c2 = _host.stats_grad_coefficients(grad_mean, grad_var, mean, T * B * S)
    grad_x, _, gwb = emu.conv_backward(
        None, x, w, None, d, 0, (0.0, 0.0, 0.0), hist, stats=(mean, c1, c2)
    )
    grad_w, _ = _host.split_weight_bias_grad(gwb, w, None)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-3}
    torch.testing.assert_close(grad_x.float(), xr.grad, **tol)
    torch.testing.assert_close(grad_w, wr.grad, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- dense


@pytest.mark.parametrize("shape", [(4, 4, 37), (6, 3, 5), (1, 1, 9), (16, 16, 65)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_fire_matches_reference(emu, shape, dtype):
    t_out, t_in, m = shape
    g = _gen(t_out * 100 + m)
    x = torch.randn(t_in, m, generator=g).to(dtype)
    w = (torch.randn(t_out, t_in, generator=g) / math.sqrt(t_in)).to(dtype)
    b = (torch.randn(t_out, 1, generator=g) * 0.2).to(dtype)
    exact = torch.addmm(b.double(), w.double(), x.double())
    margin = exact.abs() > (1e-4 if dtype == torch.float32 else 3e-2)
    for wide in (False, True):
        got = emu.dense_fire(x, w, b, wide=wide)
        assert got.dtype == dtype
        assert torch.equal(got[margin], (exact >= 0).to(dtype)[margin])
    want = reference.dense_fire(x.float(), w.float(), b.float(), surrogate.ATan())
    assert torch.equal(emu.dense_fire(x, w, b)[margin], want.to(dtype)[margin])
    for sg_fn in (surrogate.ATan(), surrogate.Sigmoid(), surrogate.Erf()):
        grad_s = torch.randn(t_out, m, generator=g).to(dtype)
        xr, wr, br = (t.float().clone().requires_grad_(True) for t in (x, w, b))
        reference.dense_fire(xr, wr, br, sg_fn).backward(grad_s.float())
        sg, params = _surrogates.encode(sg_fn)
        grad_x, gh = emu.dense_backward(grad_s, x, w, b, sg, params)
        tol = (
            {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
        )
        torch.testing.assert_close(grad_x.float(), xr.grad, **tol)
        torch.testing.assert_close(gh @ x.float().t(), wr.grad, **tol)
        torch.testing.assert_close(gh.sum(1, keepdim=True), br.grad, **tol)


# ---------------------------------------------------------------- host-side behaviour


def test_import_neither_imports_cupy_nor_initialises_cuda():
    code = (
        "import sys, torch, spikingjelly_psn.ops.cupy\n"
        "assert 'cupy' not in sys.modules, 'cupy imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_tensors_are_rejected_with_the_fix():
    x, w, b = torch.randn(4, 2, 3, 1), torch.ones(3, 2), torch.zeros(3)
    with pytest.raises(RuntimeError, match=r"\.cuda\(\).*backend=\"torch\""):
        cupy_ops.causal_conv_fire(x, w, b, 1, surrogate.ATan())
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        cupy_ops.dense_fire(torch.randn(4, 5), torch.eye(4), torch.zeros(4, 1), surrogate.ATan())
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        cupy_ops.conv_channel_stats(x, w, 1)


def test_missing_cupy_raises_import_error_with_install_hint(monkeypatch):
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
