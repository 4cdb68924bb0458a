"""One training step, one training epoch, one evaluation pass: plain functions over a :class:`Kit`."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from spikingjelly.activation_based import functional
from torch import nn

from .config import OptimConfig, TrainConfig
from .data import DataBundle, to_time_major
from .dist import DistInfo, all_sum
from .loss import loss_fn, mix_batch, readout


class Diverged(RuntimeError):
    """Training produced non-finite values; the run stops and keeps its last good checkpoint."""

    def __init__(self, what: str, epoch: int, out: Path | None) -> None:
        kept = (
            f"{out / 'last.pt'} (epoch {epoch}) is the last good checkpoint"
            if epoch > 0 and out is not None
            else "no checkpoint was written"
        )
        super().__init__(
            f"training diverged: {what} of epoch {epoch + 1}; stopped, {kept}; lower optim.lr, "
            f"set optim.grad_clip, or let train.nonfinite_patience=N skip up to N bad batches"
        )


def nonfinite_tensors(net: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``net`` that hold a NaN or an infinity."""
    named = [*net.named_parameters(), *net.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(t.isfinite().all())]


@dataclass
class Kit:
    """What a step needs: the model and the wrapper (DDP, compiled) that runs it in training,
    the optimizer and its scaler, the data layout, the device and the job."""

    model: nn.Module
    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: DataBundle
    T: int
    device: torch.device
    info: DistInfo
    optim: OptimConfig
    amp_dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's AMP dtype; nothing for an fp32 run."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def time_major(self, x: torch.Tensor) -> torch.Tensor:
        """A loader batch as the model's ``[T, B, ...]`` input on the run's device."""
        return to_time_major(x.to(self.device, non_blocking=True), self.data.layout, self.T)

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        return all_sum(values, self.info, self.device)


@dataclass
class Tally:
    """Summed loss, correct predictions and samples of an epoch."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, loss_sum: float, correct: int, seen: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += seen

    def over_ranks(self, kit: Kit) -> tuple[float, float, float]:
        """(mean loss, accuracy in %, samples) over every rank."""
        loss_sum, correct, seen = kit.sum_over_ranks([self.loss_sum, self.correct, self.seen])
        return loss_sum / max(seen, 1), 100 * correct / max(seen, 1), seen


def train_step(kit: Kit, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int] | None:
    """One optimizer step: (summed loss, correct predictions) of the batch, or ``None`` (and
    no step) when the loss is not finite on some rank."""
    y = y.to(kit.device, non_blocking=True)
    xm, target = mix_batch(x.to(kit.device, non_blocking=True), y, kit.data.num_classes, kit.optim)
    with kit.autocast():
        out = kit.forward_model(to_time_major(xm, kit.data.layout, kit.T))
        loss = loss_fn(out.float(), target, kit.optim, train=True)
    kit.optimizer.zero_grad(set_to_none=True)
    kit.scaler.scale(loss).backward()
    functional.reset_net(kit.model)
    loss_value = float(loss.detach())
    if not finite_on_every_rank(kit, loss_value):
        kit.optimizer.zero_grad(set_to_none=True)
        return None
    if kit.optim.grad_clip is not None:
        kit.scaler.unscale_(kit.optimizer)
        nn.utils.clip_grad_norm_(kit.model.parameters(), kit.optim.grad_clip)
    kit.scaler.step(kit.optimizer)
    kit.scaler.update()
    correct = int((readout(out.detach()).argmax(1) == y).sum())
    return loss_value * y.shape[0], correct


def finite_on_every_rank(kit: Kit, value: float) -> bool:
    """``value`` is finite on every rank (DDP ranks must skip a step together)."""
    return kit.sum_over_ranks([0.0 if math.isfinite(value) else 1.0])[0] == 0.0


def train_epoch(
    kit: Kit,
    loader: Iterable,
    batches: int,
    epoch: int,
    train: TrainConfig,
    out: Path | None,
) -> dict[str, float]:
    """Train on the first ``batches`` batches of ``loader``; the epoch's metrics row.

    Up to ``train.nonfinite_patience`` consecutive batches with a non-finite loss are
    skipped (and counted); one more stops the run with :class:`Diverged`.
    """
    kit.model.train()
    show = train.progress and kit.info.is_main
    bar = progress_bar(batches, f"epoch {epoch + 1}/{train.epochs}", show)
    tally, skipped, streak, t0 = Tally(), 0, 0, time.perf_counter()
    for i, (x, y) in zip(range(batches), loader):
        step = train_step(kit, x, y)
        if step is None:
            skipped, streak = skipped + 1, streak + 1
            if streak > train.nonfinite_patience:
                raise Diverged(f"the training loss is not finite in batch {i + 1}", epoch, out)
        else:
            streak = 0
            tally.add(step[0], step[1], len(y))
        if bar is not None:
            bar.set_postfix(
                loss=f"{tally.loss_sum / max(tally.seen, 1):.4f}",
                acc=f"{100 * tally.correct / max(tally.seen, 1):.2f}%",
                samples_s=f"{tally.seen * kit.info.world / (time.perf_counter() - t0):.0f}",
            )
            bar.update()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    loss, acc, seen = tally.over_ranks(kit)
    row = {
        "train_loss": loss,
        "train_acc": acc,
        "samples_per_s": seen / max(elapsed, 1e-9),
        "epoch_time_s": elapsed,
    }
    if skipped:
        row["skipped_batches"] = skipped
    return row


@torch.no_grad()
def evaluate(kit: Kit, loader: Iterable, batches: int | None) -> dict[str, float]:
    """Test loss and accuracy (%) over ``loader`` (its first ``batches`` batches if given)."""
    kit.model.eval()
    tally = Tally()
    for i, (x, y) in enumerate(loader):
        if batches is not None and i >= batches:
            break
        y = y.to(kit.device)
        with kit.autocast():
            out = kit.model(kit.time_major(x)).float()
        functional.reset_net(kit.model)
        loss = float(loss_fn(out, y, kit.optim, train=False))
        tally.add(loss * len(y), int((readout(out).argmax(1) == y).sum()), len(y))
    loss, acc, _ = tally.over_ranks(kit)
    return {"test_loss": loss, "test_acc": acc}


def progress_bar(total: int, desc: str, show: bool):
    """A progress bar on a terminal; none when ``show`` is false or stderr is a file or a
    pipe (a log)."""
    if not (show and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
