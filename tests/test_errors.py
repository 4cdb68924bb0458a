"""Bad input gets an error that names the problem (and the fix)."""

import pytest
import torch

from spikingjelly_psn import MFPSN, PSN, MaskedPSN, SlidingPSN


def test_wrong_number_of_time_steps():
    with pytest.raises(ValueError, match=r"PSN\(T=4\) got an input with 5 time-steps"):
        PSN(4)(torch.randn(5, 2))
    with pytest.raises(
        ValueError, match=r"MaskedPSN\(T=4\) got an input with 3 time-steps.*streaming=True"
    ):
        MaskedPSN(2, 4, lambda_init=1.0, step_mode="m")(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"MaskedPSN with lambda_=0.0 < 1 is not causal"):
        MaskedPSN(2, 4, step_mode="m", streaming=True)(torch.randn(3, 2))
    neuron = MaskedPSN(2, 4, lambda_init=1.0, step_mode="m", streaming=True)
    neuron(torch.randn(3, 2))
    with pytest.raises(OverflowError, match="reset_net"):
        neuron(torch.randn(2, 2))


@pytest.mark.parametrize(
    "neuron, shape, layout",
    [
        (PSN(4), (4,), r"\[T, N, \*\]"),
        (MaskedPSN(2, 4, step_mode="m"), (4,), r"\[T, N, \*\]"),
        (SlidingPSN(2, step_mode="m"), (4,), r"\[T, N, \*\]"),
        (SlidingPSN(2), (), r"\[N, \*\]"),
        (MFPSN(2, step_mode="m"), (4, 3), r"\[T, N, C\] or \[T, N, C, H, W\]"),
        (MFPSN(2, channels=3, step_mode="m"), (4, 3), r"\[T, N, C\] or \[T, N, C, H, W\]"),
        (MFPSN(2, channels=3).eval(), (3,), r"\[N, C\] or \[N, C, H, W\]"),
    ],
)
def test_wrong_rank(neuron, shape, layout):
    with pytest.raises(ValueError, match=layout):
        neuron(torch.randn(shape))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SlidingPSN(0), "k must be an integer >= 1"),
        (lambda: MFPSN(0), "k must be an integer >= 1"),
        (lambda: MaskedPSN(0, 4), "k must be an integer >= 1"),
        (lambda: MaskedPSN(2, 4, lambda_init=2.0), r"lambda_ must be in \[0, 1\], got 2.0"),
        (lambda: MaskedPSN(2, 4, lambda_init=float("nan")), "lambda_ must be a finite number"),
        (lambda: MFPSN(2, momentum=5), r"momentum must be in \[0, 1\]"),
        (lambda: MFPSN(2, eps=-1), "eps must be > 0"),
        (lambda: MFPSN(2, v_threshold=float("inf")), "v_threshold must be a finite number"),
        (lambda: PSN(0), "T must be an integer >= 1"),
        (lambda: MFPSN(2, dilation=0), "dilation must be an integer >= 1"),
        (lambda: MFPSN(2, channels=0), "channels must be an integer >= 1"),
        (lambda: MFPSN(2, threshold="lif"), "threshold must be one of"),
        (lambda: MFPSN(2, exp_min=3, exp_max=1), "exp_min=3 is greater than exp_max=1"),
    ],
)
def test_bad_constructor_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("make", [lambda: PSN(3), lambda: SlidingPSN(2), lambda: MFPSN(2)])
def test_integer_input(make):
    with pytest.raises(TypeError, match=r"floating-point input.*x\.float\(\)"):
        make()(torch.ones(3, 2, 2, dtype=torch.int64))
    neuron = make()
    neuron.step_mode = "m"
    with pytest.raises(TypeError, match=r"floating-point input.*x\.float\(\)"):
        neuron(torch.ones(3, 2, 2, dtype=torch.int64))


def test_lambda_setter_rejects_values_outside_zero_one():
    neuron = MaskedPSN(2, 4)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lambda_ must be"):
            neuron.lambda_ = bad
    assert neuron.lambda_.item() == 0.0


def test_channel_count_that_changes_between_calls():
    neuron = MFPSN(2, step_mode="m")
    neuron(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="MFPSN has 4 channels but got input with 5 channels"):
        neuron(torch.randn(3, 2, 5))


@pytest.mark.parametrize(
    "make, steps",
    [
        (lambda: SlidingPSN(3), lambda n: torch.randn(n, 3)),
        (lambda: MaskedPSN(2, 4, lambda_init=1.0), lambda n: torch.randn(n, 3)),
        (lambda: MFPSN(2, channels=3).eval(), lambda n: torch.randn(n, 3)),
        (lambda: SlidingPSN(3, step_mode="m", streaming=True), lambda n: torch.randn(2, n, 3)),
        (lambda: MFPSN(2, step_mode="m", streaming=True).eval(), lambda n: torch.randn(2, n, 3)),
    ],
)
def test_batch_size_change_inside_a_sequence_says_reset_net(make, steps):
    """SpikingJelly's single-step queue crashes in torch.stack here; the plugin says why."""
    neuron = make()
    neuron(steps(2))
    with pytest.raises(ValueError, match="batch size or feature shape changed.*reset_net"):
        neuron(steps(5))
    neuron.reset()
    assert neuron(steps(5)).shape[-2] == 5


def test_input_dtype_other_than_the_dense_weights_names_the_fix():
    for neuron in (PSN(3), MaskedPSN(2, 3, step_mode="m")):
        with pytest.raises(
            TypeError,
            match=r"parameters are torch.float32 but the input is torch.bfloat16.*autocast",
        ):
            neuron(torch.randn(3, 2, dtype=torch.bfloat16))


def test_empty_inputs_give_empty_outputs_or_say_why():
    assert SlidingPSN(2, step_mode="m")(torch.randn(0, 3)).shape == (0, 3)
    assert MFPSN(2, channels=3, step_mode="m").eval()(torch.randn(0, 2, 3)).shape == (0, 2, 3)
    assert MFPSN(2, channels=3, step_mode="m").eval()(torch.randn(4, 0, 3)).shape == (4, 0, 3)
    with pytest.raises(ValueError, match="0 time-steps"):
        MFPSN(2, channels=3, step_mode="m")(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="empty batch"):
        MFPSN(2, channels=3, step_mode="m")(torch.randn(4, 0, 3))
    with pytest.raises(ValueError, match="0 channels"):
        MFPSN(2, step_mode="m")(torch.randn(4, 2, 0))


@pytest.mark.parametrize(
    "neuron",
    [
        PSN(3),
        MaskedPSN(2, 3, 0.5, step_mode="m"),
        MaskedPSN(2, 3, 1.0, step_mode="m"),
        SlidingPSN(2, step_mode="m"),
        MFPSN(2, channels=2, step_mode="m").eval(),
    ],
)
def test_nan_input_gives_no_spike_and_no_crash(neuron):
    """Documented: Θ(NaN) is 0 (a comparison with NaN is false); gradients carry the NaN."""
    x = torch.randn(3, 2, 2)
    x[1, 0, 0] = float("nan")
    out = neuron(x)
    assert torch.isfinite(out).all()
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_single_step_where_unsupported():
    with pytest.raises(ValueError, match="PSN does not support step_mode='s'.*MaskedPSN"):
        PSN(4, step_mode="s")
    masked = MaskedPSN(2, 4, lambda_init=0.5, step_mode="s")
    with pytest.raises(ValueError, match="not causal, so it cannot run single-step mode"):
        masked(torch.randn(3))
    neuron = MFPSN(2, channels=3, step_mode="s")
    with pytest.raises(RuntimeError, match="use step_mode='m'.*single steps work in eval mode"):
        neuron(torch.randn(2, 3))
    neuron.eval()
    assert neuron(torch.randn(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="step_mode"):
        SlidingPSN(2, step_mode="x")


def test_masked_single_step_past_T():
    neuron = MaskedPSN(2, 2, lambda_init=1.0, step_mode="s")
    neuron(torch.randn(3))
    neuron(torch.randn(3))
    with pytest.raises(OverflowError, match=r"MaskedPSN\(T=2\) has already run 2 time-steps"):
        neuron(torch.randn(3))


def test_unknown_keyword_is_a_type_error_and_reset_kwargs_warn_once():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['taux'\]"):
        SlidingPSN(2, taux=2.0)
    with pytest.warns(UserWarning, match="has no reset"):
        MaskedPSN(2, 4, detach_reset=True, v_reset=None)
