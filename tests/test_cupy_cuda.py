"""The real kernels on a GPU against the torch backend (skipped unless CuPy sees a GPU)."""

from __future__ import annotations

import pytest
import torch
from cupy_support.inputs import conv_inputs, generator
from spikingjelly.activation_based import surrogate

from spikingjelly_psn import ops
from spikingjelly_psn.ops import reference

pytestmark = pytest.mark.cuda  # skipped without a GPU (conftest.py)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SURROGATES = [
    surrogate.ATan(), surrogate.Sigmoid(), surrogate.PiecewiseQuadratic(), surrogate.PiecewiseExp(),
    surrogate.SoftSign(), surrogate.SuperSpike(), surrogate.NonzeroSignLogAbs(), surrogate.Erf(),
    surrogate.PiecewiseLeakyReLU(), surrogate.SquarewaveFourierSeries(), surrogate.S2NN(),
    surrogate.QPseudoSpike(), surrogate.LeakyKReLU(0.1, 1.0), surrogate.FakeNumericalGradient(),
    surrogate.LogTailedReLU(0.1), surrogate.Rect(), surrogate.DeterministicPass(),
]  # fmt: skip


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}


def _conv_inputs(T, B, C, S, k, d, dtype, shared=False, history=False, pow2=False, seed=0):
    rows = 1 if shared else C
    return conv_inputs(generator(seed, "cuda"), (T, B, C, S), k, d, dtype, weight_rows=rows,
                       bias_rows=rows, history=history, pow2=pow2)  # fmt: skip


def _conv_run(backend, x, w, b, d, sg, hist, pow2, grad_s):
    xr, wr, br = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    s = ops.causal_conv_fire(xr, wr, br, d, sg, hist, pow2, backend=backend)
    s.backward(grad_s)
    return s, xr.grad, wr.grad, br.grad


CONV_CASES = [
    # T, B, C, S, k, d, shared, history, pow2
    (16, 4, 8, 33, 4, 1, False, False, False),
    (9, 3, 5, 17, 3, 2, False, True, True),
    (1, 2, 3, 7, 5, 1, False, True, False),
    (3, 2, 4, 9, 6, 3, False, False, True),
    (32, 8, 1, 257, 8, 1, True, True, False),
    (7, 5, 6, 1, 3, 2, True, False, True),
    (4, 2, 2, 5, 64, 1, False, True, False),  # the generic kernels
    (400, 1, 2, 40, 3, 1, False, False, False),  # long T
    (21, 3, 40, 1, 8, 1, False, True, True),  # window 8, 32 channels per backward block
    (37, 2, 33, 1, 12, 2, False, True, False),  # window 16: tap rows per channel
    (19, 2, 3, 50, 16, 1, False, False, True),  # window 16, power-of-two taps
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv_fire_parity(case, dtype):
    T, B, C, S, k, d, shared, history, pow2 = case
    x, w, b, hist = _conv_inputs(T, B, C, S, k, d, dtype, shared, history, pow2, seed=T + k)
    grad_s = torch.randn_like(x)
    sg = surrogate.ATan() if k % 2 else surrogate.Sigmoid()
    ref = _conv_run("torch", x, w, b, d, sg, hist, pow2, grad_s)
    got = _conv_run("cupy", x, w, b, d, sg, hist, pow2, grad_s)
    assert torch.equal(got[0], ref[0])  # identical fp32 arithmetic: identical spikes
    torch.testing.assert_close(got[1], ref[1], **_tol(dtype))
    torch.testing.assert_close(got[2], ref[2], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(got[3], ref[3], rtol=1e-3, atol=1e-3)


def test_a_negative_subnormal_charge_does_not_spike():
    """Compiled without flush-to-zero: H = -1e-40 stays negative (no spike), as on the torch
    backend, with float and with power-of-two taps."""
    x = torch.tensor([-1e-40, 1e-40, -0.0, 0.0], device="cuda").view(4, 1, 1, 1)
    w, b = torch.ones(1, 1, device="cuda"), torch.zeros(1, device="cuda")
    want = torch.tensor([0.0, 1.0, 1.0, 1.0], device="cuda").view(4, 1, 1, 1)
    for pow2 in (False, True):
        got = ops.causal_conv_fire(x, w, b, 1, surrogate.ATan(), None, pow2, backend="cupy")
        assert torch.equal(got, want)
    assert torch.equal(reference.causal_conv_fire(x, w, b, 1, surrogate.ATan()), want)


@pytest.mark.parametrize("k", [3, 8, 12, 20])
def test_power_of_two_taps_on_awkward_inputs(k):
    """Zeros, subnormals, products out of the normal range, inf and NaN: exponent arithmetic
    gives the spikes of float multiplies and of the torch backend, bit for bit."""
    g = torch.Generator(device="cuda").manual_seed(k)
    T, B, C, S, d = 33, 2, 6, 40, 2
    x = torch.randn(T, B, C, S, device="cuda", generator=g)
    specials = torch.tensor([0.0, -0.0, 1e-40, -3e-39, 3e38, float("inf"), float("nan")],
                            device="cuda")  # fmt: skip
    pick = torch.rand(x.shape, device="cuda", generator=g) < 0.1
    index = torch.randint(len(specials), x.shape, device="cuda", generator=g)
    x = torch.where(pick, specials[index], x)
    exps = torch.randint(-40, 40, (C, k), device="cuda", generator=g)
    exps[0, 0], exps[1, -1] = -140, 120
    w = torch.ldexp(torch.ones(C, k, device="cuda"), exps)
    w[2, 0] = 0.0
    b = torch.randn(C, device="cuda", generator=g)
    want = reference.causal_conv_fire(x, w, b, d, surrogate.ATan())
    for pow2 in (False, True):
        assert torch.equal(
            ops.causal_conv_fire(x, w, b, d, surrogate.ATan(), None, pow2, "cupy"), want
        )


@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_every_surrogate_on_the_gpu(sg):
    x, w, b, hist = _conv_inputs(6, 3, 4, 11, 3, 1, torch.float32, history=True, seed=1)
    grad_s = torch.randn_like(x)
    ref = _conv_run("torch", x, w, b, 1, sg, hist, False, grad_s)
    got = _conv_run("cupy", x, w, b, 1, sg, hist, False, grad_s)
    for a, e in zip(got, ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
    xd = torch.randn(5, 301, device="cuda")
    wd, bd = torch.randn(5, 5, device="cuda") / 3, torch.zeros(5, 1, device="cuda")
    got, ref = _dense_run("cupy", xd, wd, bd, sg), _dense_run("torch", xd, wd, bd, sg)
    assert got[0].shape == ref[0].shape == (5, 301)
    for a, e in zip(got[1:], ref[1:]):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-3)


def test_strided_and_expanded_inputs():
    x, w, b, _ = _conv_inputs(8, 3, 4, 10, 3, 2, torch.float32)
    strided = x.transpose(1, 3).contiguous().transpose(1, 3)  # same values, other strides
    expanded = x[:, :1].expand(8, 3, 4, 10)
    for xin in (strided, expanded):
        grad_s = torch.randn(xin.shape, device="cuda")
        ref = _conv_run("torch", xin, w, b, 2, surrogate.ATan(), None, False, grad_s)
        got = _conv_run("cupy", xin, w, b, 2, surrogate.ATan(), None, False, grad_s)
        assert torch.equal(got[0], ref[0])
        for a, e in zip(got[1:], ref[1:]):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def _dense_run(backend, x, w, b, sg, grad_s=None):
    xr, wr, br = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    s = ops.dense_fire(xr, wr, br, sg, backend=backend)
    s.backward(torch.ones_like(s) if grad_s is None else grad_s)
    return s, xr.grad, wr.grad, br.grad


@pytest.mark.parametrize(
    "shape", [(8, 8, 1000), (16, 16, 4099), (5, 3, 77), (1, 1, 33), (32, 32, 2000), (70, 70, 300)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_fire_parity(shape, dtype):
    t_out, t_in, m = shape
    g = torch.Generator(device="cuda").manual_seed(m)
    x = torch.randn(t_in, m, device="cuda", generator=g).to(dtype)
    w = (torch.randn(t_out, t_in, device="cuda", generator=g) / t_in**0.5).to(dtype)
    b = (torch.randn(t_out, 1, device="cuda", generator=g) * 0.2).to(dtype)
    grad_s = torch.randn(t_out, m, device="cuda", generator=g).to(dtype)
    exact = torch.addmm(b.double(), w.double(), x.double())
    margin = exact.abs() > (1e-3 if dtype == torch.float32 else 5e-2)
    ref = _dense_run("torch", x, w, b, surrogate.ATan(), grad_s)
    got = _dense_run("cupy", x, w, b, surrogate.ATan(), grad_s)
    assert got[0].dtype == dtype
    assert torch.equal(got[0][margin], ref[0][margin])
    tol = {"rtol": 1e-3, "atol": 1e-3} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-1}
    for a, e in zip(got[1:], ref[1:]):
        torch.testing.assert_close(a.float(), e.float(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_channel_stats_parity(dtype):
    x, w, _, hist = _conv_inputs(12, 4, 6, 25, 4, 2, dtype, history=True, seed=3)
    gm, gv = torch.randn(6, device="cuda"), torch.randn(6, device="cuda")
    results = []
    for backend in ("torch", "cupy"):
        xr, wr = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
        mean, var = ops.conv_channel_stats(xr, wr, 2, hist, backend=backend)
        ((mean * gm).sum() + (var * gv).sum()).backward()
        results.append((mean, var, xr.grad, wr.grad))
    for a, e in zip(results[1], results[0]):
        torch.testing.assert_close(a.float(), e.float(), **_tol(dtype))


def test_deterministic_mode_is_bitwise_reproducible():
    import spikingjelly_psn.ops.cupy as cupy_ops

    x, w, b, hist = _conv_inputs(16, 16, 8, 300, 4, 2, torch.float32, history=True, seed=9)
    grad_s = torch.randn_like(x)
    cupy_ops.set_deterministic(True)
    try:
        first = _conv_run("cupy", x, w, b, 2, surrogate.ATan(), hist, False, grad_s)
        second = _conv_run("cupy", x, w, b, 2, surrogate.ATan(), hist, False, grad_s)
    finally:
        cupy_ops.set_deterministic(False)
    for a, e in zip(first, second):
        assert torch.equal(a, e)


def test_torch_compile_fullgraph():
    x, w, b, hist = _conv_inputs(8, 2, 4, 16, 3, 1, torch.float32, history=True, seed=4)
    wd, bd = torch.randn(8, 8, device="cuda") / 3, torch.zeros(8, 1, device="cuda")
    sg = surrogate.ATan()

    def net(x, w, b, wd, bd):
        s = ops.causal_conv_fire(x, w, b, 1, sg, hist, False, backend="cupy")
        mean, var = ops.conv_channel_stats(x, w, 1, hist, backend="cupy")
        t = ops.dense_fire(s.flatten(1), wd, bd, sg, backend="cupy")
        return t.sum() + mean.sum() + var.sum()

    compiled = torch.compile(net, fullgraph=True)
    grads = []
    for fn in (net, compiled):
        inputs = [t.detach().clone().requires_grad_(True) for t in (x, w, b, wd, bd)]
        fn(*inputs).backward()
        grads.append([t.grad for t in inputs])
    for a, e in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_cuda_graph_capture_and_replay():
    x, w, b, hist = _conv_inputs(8, 4, 4, 32, 3, 1, torch.float32, history=True, seed=5)
    sg = surrogate.Sigmoid()
    static_x = x.clone().requires_grad_(True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compile the kernels outside the capture
        for _ in range(2):
            ops.causal_conv_fire(static_x, w, b, 1, sg, hist, True, backend="cupy").sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.causal_conv_fire(static_x, w, b, 1, sg, hist, True, backend="cupy")
        out.sum().backward()
    new_x = torch.randn_like(x)
    static_x.data.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    want = _conv_run("torch", new_x, w, b, 1, sg, hist, True, torch.ones_like(new_x))
    assert torch.equal(out, want[0])
    torch.testing.assert_close(static_x.grad, want[1], rtol=1e-5, atol=1e-5)


def test_two_streams():
    x, w, b, _ = _conv_inputs(16, 8, 8, 128, 4, 1, torch.float32, seed=6)
    want = reference.causal_conv_fire(x, w, b, 1, surrogate.ATan())
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    outs = []
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outs.append(ops.causal_conv_fire(x, w, b, 1, surrogate.ATan(), backend="cupy"))
    for stream in streams:
        torch.cuda.current_stream().wait_stream(stream)
    for out in outs:
        assert torch.equal(out, want)


def test_autocast_dense_output_dtype():
    x = torch.randn(4, 100, device="cuda")
    w, b = torch.randn(4, 4, device="cuda"), torch.zeros(4, 1, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        ref = ops.dense_fire(x, w, b, surrogate.ATan(), backend="torch")
        got = ops.dense_fire(x, w, b, surrogate.ATan(), backend="cupy")
    assert got.dtype == ref.dtype == torch.float16


# ---------------------------------------------------------------- SpikingJelly call patterns


def _sj_twins(name: str):
    from spikingjelly.activation_based import neuron as sj_neuron

    import spikingjelly_psn

    make = {
        "PSN": (spikingjelly_psn.PSN, sj_neuron.PSN, {"T": 8}),
        "MaskedPSN": (spikingjelly_psn.MaskedPSN, sj_neuron.MaskedPSN, {"k": 3, "T": 8}),
        "SlidingPSN": (spikingjelly_psn.SlidingPSN, sj_neuron.SlidingPSN, {"k": 3}),
    }[name]
    ours, theirs, kwargs = make
    plugin_kwargs = kwargs if name == "PSN" else {**kwargs, "step_mode": "m"}
    theirs_kwargs = kwargs if name == "PSN" else {**kwargs, "step_mode": "m"}
    a = ours(**plugin_kwargs, backend="cupy").cuda()
    b = theirs(**theirs_kwargs).cuda()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("name", ["PSN", "MaskedPSN", "SlidingPSN"])
def test_cuda_fp16_autocast_matches_spikingjelly(name):
    a, b = _sj_twins(name)
    x = torch.randn(8, 64, 33, device="cuda") * 2
    with torch.autocast("cuda", dtype=torch.float16):
        out_a, out_b = a(x), b(x)
    assert out_a.dtype == out_b.dtype == torch.float16
    assert (out_a != out_b).float().mean() < 0.01


@pytest.mark.parametrize("name", ["PSN", "MaskedPSN", "SlidingPSN"])
def test_cuda_training_without_reset_and_a_smaller_last_batch(name):
    a, b = _sj_twins(name)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    g = torch.Generator(device="cuda").manual_seed(0)
    for n in (16, 16, 7):
        x = torch.randn(8, n, 10, device="cuda", generator=g) * 2
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (net(x) * torch.linspace(-1, 1, 10, device="cuda")).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
