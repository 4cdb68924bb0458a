"""The training steps as plain functions, without a Trainer: one step, one epoch, one evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikingjelly_psn.train import steps
from spikingjelly_psn.train.config import OptimConfig, TrainConfig
from spikingjelly_psn.train.data import DataBundle
from spikingjelly_psn.train.dist import DistInfo

T, FEATURES, CLASSES = 3, 5, 4


def _kit(seed: int = 0) -> steps.Kit:
    torch.manual_seed(seed)
    model = nn.Linear(FEATURES, CLASSES)  # [T, B, F] -> [T, B, classes], time-averaged readout
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = DataBundle([], [], CLASSES, "static", (FEATURES,))
    return steps.Kit(
        model, model, optimizer, torch.amp.GradScaler("cuda", enabled=False), data, T,
        torch.device("cpu"), DistInfo(), OptimConfig(), None,
    )  # fmt: skip


def _batches(n: int, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, FEATURES, generator=g), torch.randint(CLASSES, (size,), generator=g))
        for _ in range(n)
    ]


def test_train_step_returns_summed_loss_and_correct_count():
    kit, (x, y) = _kit(), _batches(1)[0]
    with torch.no_grad():
        logits = kit.model(x)  # a static input repeats over T: the readout is the logits
    expected_loss = float(nn.functional.cross_entropy(logits, y)) * len(y)
    expected_correct = int((logits.argmax(1) == y).sum())
    before = kit.model.weight.detach().clone()
    loss_sum, correct = steps.train_step(kit, x, y)
    assert loss_sum == pytest.approx(expected_loss, rel=1e-6)
    assert correct == expected_correct
    assert not torch.equal(kit.model.weight, before)  # the optimizer stepped


def test_a_nonfinite_loss_skips_the_step(monkeypatch):
    kit, (x, y) = _kit(), _batches(1)[0]
    monkeypatch.setattr(steps, "loss_fn", lambda out, target, o, train: out.sum() * float("nan"))
    before = [p.detach().clone() for p in kit.model.parameters()]
    assert steps.train_step(kit, x, y) is None
    assert all(torch.equal(p, b) for p, b in zip(kit.model.parameters(), before))
    assert all(p.grad is None for p in kit.model.parameters())


def test_train_epoch_stops_after_its_batches_and_reports_percent():
    kit, batches = _kit(), _batches(5)
    row = steps.train_epoch(kit, batches, 2, 0, TrainConfig(progress=False), None)
    assert set(row) == {"train_loss", "train_acc", "samples_per_s", "epoch_time_s"}
    replay = _kit()
    sums = [steps.train_step(replay, x, y) for x, y in batches[:2]]
    assert row["train_loss"] == pytest.approx(sum(s[0] for s in sums) / 12, rel=1e-6)
    assert row["train_acc"] == pytest.approx(100 * sum(s[1] for s in sums) / 12)
    assert torch.equal(kit.model.weight, replay.model.weight)  # exactly two steps


def test_train_epoch_skips_up_to_patience_then_diverges(monkeypatch, tmp_path):
    real, calls = steps.loss_fn, [0]

    def nan_from_second(out, target, o, train):
        calls[0] += 1
        loss = real(out, target, o, train=train)
        return loss * float("nan") if calls[0] >= 2 else loss

    monkeypatch.setattr(steps, "loss_fn", nan_from_second)
    row = steps.train_epoch(
        _kit(), _batches(3), 3, 0, TrainConfig(progress=False, nonfinite_patience=2), None
    )
    assert row["skipped_batches"] == 2
    calls[0] = 0
    with pytest.raises(steps.Diverged, match=r"not finite in batch 3 of epoch 2.*last\.pt"):
        steps.train_epoch(
            _kit(), _batches(3), 3, 1, TrainConfig(progress=False, nonfinite_patience=1), tmp_path
        )


def test_evaluate_counts_only_its_batches():
    kit, batches = _kit(), _batches(4)
    with torch.no_grad():
        logits = torch.cat([kit.model(x) for x, _ in batches[:3]])
    y = torch.cat([y for _, y in batches[:3]])
    result = steps.evaluate(kit, batches, 3)
    assert result["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)))
    assert result["test_acc"] == pytest.approx(100 * float((logits.argmax(1) == y).float().mean()))
    assert steps.evaluate(kit, batches, None) != result  # the fourth batch counts without a limit
