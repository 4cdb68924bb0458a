"""Masked PSN's λ schedules."""

import pytest
import torch

from spikingjelly_psn import LambdaSchedule, MaskedPSN


def test_paper_schedule_reaches_one_after_an_eighth_of_training():
    schedule = LambdaSchedule(256, "paper")
    assert schedule.value(0) == 0.0
    assert schedule.value(16) == pytest.approx(8 * 16 / 255)
    assert schedule.value(31) < 1.0 and schedule.value(32) == 1.0 and schedule.value(255) == 1.0


def test_linear_schedule():
    schedule = LambdaSchedule(11, "linear")
    assert [schedule.value(e) for e in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert LambdaSchedule(1).value(0) == 1.0


def test_apply_sets_every_masked_psn_without_touching_others():
    net = torch.nn.Sequential(MaskedPSN(2, 4), torch.nn.Linear(4, 4), MaskedPSN(3, 4))
    assert LambdaSchedule(9, "paper").apply(net, 1) == 1.0
    assert net[0].lambda_ == 1.0 and float(net[2]._lambda_) == 1.0
    LambdaSchedule(9, "linear").apply(net, 4)
    assert net[0].lambda_ == 0.5 and float(net[0]._lambda_) == 0.5


def test_bad_schedules():
    with pytest.raises(ValueError, match="kind must be one of"):
        LambdaSchedule(10, "cosine")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        LambdaSchedule(0)


def test_lambda_ramp_does_not_recompile_a_compiled_model_per_value():
    """The forward reads λ from the buffer and never branches on it: one graph for the ramp."""
    neuron = MaskedPSN(2, 4, step_mode="m")
    graphs = []

    def count_graphs(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(neuron, backend=count_graphs, fullgraph=True)
    x = torch.randn(4, 3)
    for epoch in range(12):
        LambdaSchedule(12, "linear").apply(neuron, epoch)
        assert torch.equal(compiled(x), neuron(x))
    assert len(graphs) == 1
