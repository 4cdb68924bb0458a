"""The training run: build everything from a :class:`Config`, train, evaluate, checkpoint, resume."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from spikingjelly.activation_based import functional
from torch import nn

from ..devices import device_name
from . import checkpoint as ckpt
from .config import Config
from .data import DataBundle, build_data, steps_of, to_time_major
from .dist import DistInfo, all_sum
from .loaders import build_loaders
from .loss import loss_fn, mix_batch, readout
from .models import build_model
from .neurons import lambda_schedule
from .optim import build_optimizer, build_scheduler
from .runlog import RunLog, epoch_line, plot_curves, summary_table


class Diverged(RuntimeError):
    """Training produced non-finite values; the run stops and keeps its last good checkpoint."""


def nonfinite_tensors(net: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``net`` that hold a NaN or an infinity."""
    named = [*net.named_parameters(), *net.named_buffers()]
    return [name for name, t in named if t.is_floating_point() and not bool(t.isfinite().all())]


def count_parameters(net: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class Trainer:
    """One run. ``run()`` trains to the end; ``dry_run()`` does one batch and reports."""

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        info: DistInfo,
        out: Path | None,
    ) -> None:
        self.cfg, self.device, self.info, self.out = cfg, device, info, out
        ckpt.seed_everything(cfg.seed)
        self.data: DataBundle = build_data(cfg)
        self.T = steps_of(self.data, cfg.data)
        self.model = build_model(cfg, self.data, self.T).to(device)
        self._materialize()
        self.train_sampler, self.train_loader, self.test_loader = build_loaders(
            cfg, self.data, info, device
        )
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.scheduler = build_scheduler(cfg.optim, cfg.train.epochs, self.optimizer)
        amp = cfg.train.amp if device.type == "cuda" else "off"
        if amp != cfg.train.amp and info.is_main:
            print(f"note: train.amp={cfg.train.amp} applies on CUDA only; running fp32 on {device}")
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.lambda_schedule = lambda_schedule(cfg)
        self.forward_model = self._wrap()
        self.start_epoch, self.best_acc, self.best_epoch = 0, -1.0, -1
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ building
    def _example(self) -> torch.Tensor:
        x = torch.stack([self.data.train[i][0] for i in range(min(2, len(self.data.train)))])
        return to_time_major(x, self.data.layout, self.T).to(self.device)

    def _materialize(self) -> None:
        import spikingjelly_psn

        spikingjelly_psn.materialize(self.model, self._example())

    def _wrap(self) -> nn.Module:
        net: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.cfg.train.compile != "off":
            net = torch.compile(net, mode=self.cfg.train.compile)
        return net

    # ------------------------------------------------------------------ state
    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.rng_state(),
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "acc_unit": ckpt.ACC_UNIT,
            "history": self.history,
            "config": self.cfg.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, scaler, RNG, epoch, λ."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_schedule()
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]
        self.history = state["history"]
        ckpt.set_rng_state(state["rng"])

    def _apply_schedule(self) -> None:
        """Set the learning rates the schedule gives at its current epoch.

        A plain resume computes the rates the checkpoint holds; a run extended with
        ``--epochs`` gets those of its new length (the factor comes from ``train.epochs``).
        """
        s = self.scheduler
        rates = [base * f(s.last_epoch) for base, f in zip(s.base_lrs, s.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, rates):
            group["lr"] = lr

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int] | None:
        """One optimizer step; ``None`` (and no step) when the loss is not finite on any rank."""
        o = self.cfg.optim
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        xm, target = mix_batch(x, y, self.data.num_classes, o)
        with self._autocast():
            out = self.forward_model(to_time_major(xm, self.data.layout, self.T))
            loss = loss_fn(out.float(), target, o, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        functional.reset_net(self.model)
        loss_value = float(loss.detach())
        if not self._finite_everywhere(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if o.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = int((readout(out.detach()).argmax(1) == y).sum())
        return loss_value * y.shape[0], correct

    def _finite_everywhere(self, value: float) -> bool:
        """``value`` is finite on every rank (DDP ranks must skip a step together)."""
        bad = 0.0 if math.isfinite(value) else 1.0
        return all_sum([bad], self.info, self.device)[0] == 0.0

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        limit = self.cfg.train.max_batches
        total = len(self.train_loader) if limit is None else min(limit, len(self.train_loader))
        bar = self._bar(total, f"epoch {epoch + 1}/{self.cfg.train.epochs}")
        loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
        skipped = streak = 0
        for i, (x, y) in enumerate(self.train_loader):
            if i >= total:
                break
            step = self._train_step(x, y)
            if step is None:
                skipped, streak = skipped + 1, streak + 1
                if streak > self.cfg.train.nonfinite_patience:
                    raise Diverged(
                        self._diverged(f"the training loss is not finite in batch {i + 1}", epoch)
                    )
            else:
                streak = 0
                loss_sum, correct, seen = loss_sum + step[0], correct + step[1], seen + len(y)
            if bar is not None:
                rate = seen * self.info.world / (time.perf_counter() - t0)
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.4f}",
                    acc=f"{100 * correct / seen:.2f}%",
                    samples_s=f"{rate:.0f}",
                )
                bar.update()
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        loss_sum, correct, seen = all_sum([loss_sum, correct, seen], self.info, self.device)
        row = {
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100 * correct / max(seen, 1),
            "samples_per_s": seen / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
        }
        if skipped:
            row["skipped_batches"] = skipped
        return row

    def _diverged(self, what: str, epoch: int) -> str:
        """The message of a run stopped by non-finite values in ``epoch`` (0-based)."""
        kept = (
            f"{self.out / 'last.pt'} (epoch {epoch}) is the last good checkpoint"
            if epoch > 0 and self.out is not None
            else "no checkpoint was written"
        )
        return (
            f"training diverged: {what} of epoch {epoch + 1}; stopped, {kept}; lower optim.lr, "
            f"set optim.grad_clip, or let train.nonfinite_patience=N skip up to N bad batches"
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        limit = self.cfg.train.max_batches
        for i, (x, y) in enumerate(self.test_loader):
            if limit is not None and i >= limit:
                break
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                out = self.model(to_time_major(x, self.data.layout, self.T)).float()
            functional.reset_net(self.model)
            loss_sum += float(loss_fn(out, y, self.cfg.optim, train=False)) * len(y)
            correct += int((readout(out).argmax(1) == y).sum())
            seen += len(y)
        loss_sum, correct, seen = all_sum([loss_sum, correct, seen], self.info, self.device)
        return {"test_loss": loss_sum / max(seen, 1), "test_acc": 100 * correct / max(seen, 1)}

    def _bar(self, total: int, desc: str):
        """A progress bar on a terminal; none when stderr is a file or a pipe (a log)."""
        if not (self.cfg.train.progress and self.info.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)

    # ------------------------------------------------------------------ runs
    def run(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to the end; returns the summary."""
        cfg, main = self.cfg, self.info.is_main
        log = RunLog(self.out, self.history, cfg.train.tensorboard) if main else None
        t_start = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                self._run_epoch(epoch, log)
        finally:
            if log is not None:
                log.close()
        elapsed = time.perf_counter() - t_start
        summary = self._summary(elapsed)
        if main:
            if cfg.train.plot and self.history:
                plot_curves(self.history, self.out / "learning_curve.png", self.title())
            print(summary_table(summary["rows"]), flush=True)
            print(f"test accuracy: {summary['final_acc']:.2f}%", flush=True)
        return summary

    def _run_epoch(self, epoch: int, log: RunLog | None) -> None:
        """Train and evaluate one epoch; checkpoint it unless it left non-finite weights."""
        lam = self.lambda_schedule.apply(self.model, epoch) if self.lambda_schedule else None
        lr = self.optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch + 1, **self.train_epoch(epoch)}
        row.update(self.evaluate())
        row["lr"] = lr
        if lam is not None:
            row["lambda"] = lam
        self.scheduler.step()
        bad = nonfinite_tensors(self.model)
        if bad:
            raise Diverged(self._diverged(f"{bad[0]} holds non-finite values at the end", epoch))
        self.history.append(row)
        improved = row["test_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["test_acc"], epoch + 1
        if log is not None:
            state = self.state(epoch)
            ckpt.save_atomic(state, self.out / "last.pt")
            if improved:
                ckpt.save_atomic(state, self.out / "best.pt")
            log.log(row)
            print(epoch_line(row, self.cfg.train.epochs), flush=True)

    def precision(self) -> str:
        """``fp32``, or the autocast dtype of an AMP run."""
        return "fp32" if self.amp_dtype is None else f"{self.cfg.train.amp} autocast"

    def where(self) -> str:
        """The device by name, with the process count of a DDP run and the precision."""
        processes = f" x{self.info.world}" if self.info.enabled else ""
        return f"{self.device}: {device_name(self.device)}{processes}, {self.precision()}"

    def title(self) -> str:
        """What a figure of this run shows: run, model, neuron, data, device, precision."""
        c = self.cfg
        return (
            f"{c.name}: {c.model.name} with {c.neuron.name}, {c.data.dataset} (T={self.T})\n"
            f"{self.where()}"
        )

    def _summary(self, elapsed: float) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        total, _ = count_parameters(self.model)
        rows = [
            ("run", f"{self.cfg.name} ({self.out})"),
            ("model / neuron", f"{self.cfg.model.name} / {self.cfg.neuron.name}"),
            (
                "data",
                f"{self.cfg.data.dataset}, T={self.T}, "
                f"{len(self.data.train)} train / {len(self.data.test)} test",
            ),
            ("parameters", f"{total:,}"),
            ("epochs", str(len(self.history))),
            ("final test accuracy", f"{last.get('test_acc', 0.0):.2f}%"),
            (
                "best test accuracy",
                f"{max(self.best_acc, 0.0):.2f}% (epoch {self.best_epoch})",
            ),
            ("wall time (this session)", f"{elapsed:.1f}s"),
            ("device", self.where()),
        ]
        if self.cfg.reference.accuracy is not None:
            ref = self.cfg.reference
            rows.append(("paper reports", f"{ref.accuracy}% ({ref.paper}, {ref.table})"))
        return {
            "rows": rows,
            "final_acc": last.get("test_acc", 0.0),
            "best_acc": self.best_acc,
            "time_s": elapsed,
        }

    def dry_run(self) -> None:
        """One training batch and one evaluation batch; print the model and its sizes."""
        total, trainable = count_parameters(self.model)
        print(self.model)
        print(f"parameters: {total:,} ({trainable:,} trainable)")
        print(
            f"data: {self.cfg.data.dataset} layout={self.data.layout} T={self.T} "
            f"classes={self.data.num_classes} train={len(self.data.train)} "
            f"test={len(self.data.test)}"
        )
        if self.lambda_schedule is not None:
            self.lambda_schedule.apply(self.model, 0)
        self.model.train()
        x, y = next(iter(self.train_loader))
        t0 = time.perf_counter()
        step = self._train_step(x, y)
        t1 = time.perf_counter()
        if step is None:
            raise Diverged(self._diverged("the training loss is not finite in batch 1", 0))
        loss = step[0]
        self.model.eval()
        with torch.no_grad():
            out = self.model(to_time_major(x.to(self.device), self.data.layout, self.T))
        functional.reset_net(self.model)
        print(
            f"one batch: input {list(x.shape)} -> output {list(out.shape)}, "
            f"loss {loss / len(y):.4f}, train step {t1 - t0:.2f}s"
        )
        print("dry run OK")


def save_config(cfg: Config, out: Path) -> None:
    """The resolved config beside the run's outputs (what ``--resume`` reads back)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()
    ckpt.write_atomic(out / "config.yaml", lambda f: f.write(text))
