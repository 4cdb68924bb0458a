"""The training run: build everything from a :class:`Config`, train, evaluate, checkpoint, resume.

A run reads from top to bottom: :class:`Trainer` builds the parts, ``run`` calls
``run_epoch`` per epoch, which calls :func:`~.steps.train_epoch` and :func:`~.steps.evaluate`
(one :func:`~.steps.train_step` per batch), then checkpoints and logs the epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml
from spikingjelly.activation_based import functional
from torch import nn

from . import checkpoint as ckpt
from .config import Config
from .data import build_data, steps_of, to_time_major
from .dist import DistInfo
from .loaders import build_loaders
from .models import build_model
from .neurons import lambda_schedule
from .optim import build_optimizer, build_scheduler
from .report import count_parameters, epoch_line, summary_rows, summary_table, title, where
from .runlog import RunLog, plot_curves
from .steps import Diverged, Kit, evaluate, nonfinite_tensors, train_epoch, train_step


class Trainer:
    """One run. ``run()`` trains to the end; ``dry_run()`` does one batch and reports."""

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo, out: Path | None) -> None:
        self.cfg, self.device, self.info, self.out = cfg, device, info, out
        ckpt.seed_everything(cfg.seed)
        self.data = build_data(cfg)
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
        self.kit = Kit(
            model=self.model,
            forward_model=self._wrap(),
            optimizer=self.optimizer,
            scaler=torch.amp.GradScaler("cuda", enabled=amp == "fp16"),
            data=self.data,
            T=self.T,
            device=device,
            info=info,
            optim=cfg.optim,
            amp_dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp),
        )
        self.lambda_schedule = lambda_schedule(cfg)
        self.start_epoch, self.best_acc, self.best_epoch = 0, -1.0, -1
        self.history: list[dict[str, Any]] = []

    def _materialize(self) -> None:
        """Create lazily shaped parameters from two training samples."""
        import spikingjelly_psn

        x = torch.stack([self.data.train[i][0] for i in range(min(2, len(self.data.train)))])
        x = to_time_major(x, self.data.layout, self.T).to(self.device)
        spikingjelly_psn.materialize(self.model, x)

    def _wrap(self) -> nn.Module:
        """The model as training runs it: inside DDP for a torchrun job, compiled if asked."""
        net: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.cfg.train.compile != "off":
            net = torch.compile(net, mode=self.cfg.train.compile)
        return net

    # ------------------------------------------------------------------ state
    def state(self, epoch: int) -> dict[str, Any]:
        """Everything a checkpoint holds to resume after ``epoch`` (0-based) exactly."""
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.kit.scaler.state_dict(),
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
        self.kit.scaler.load_state_dict(state["scaler"])
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

    # ------------------------------------------------------------------ runs
    def run(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to the end; print and return the summary."""
        cfg, main = self.cfg, self.info.is_main
        log = RunLog(self.out, self.history, cfg.train.tensorboard) if main else None
        t_start = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                self.run_epoch(epoch, log)
        finally:
            if log is not None:
                log.close()
        elapsed = time.perf_counter() - t_start
        final_acc = self.history[-1]["test_acc"] if self.history else 0.0
        if main:
            if cfg.train.plot and self.history:
                plot_curves(self.history, self.out / "learning_curve.png", self.title())
            rows = summary_rows(
                cfg,
                self.out,
                self.data,
                self.T,
                self.model,
                self.history,
                (self.best_acc, self.best_epoch),
                elapsed,
                self.where(),
            )
            print(summary_table(rows), flush=True)
            print(f"test accuracy: {final_acc:.2f}%", flush=True)
        return {"final_acc": final_acc, "best_acc": self.best_acc, "time_s": elapsed}

    def run_epoch(self, epoch: int, log: RunLog | None) -> None:
        """Train and evaluate one epoch; checkpoint it unless it left non-finite weights."""
        lam = self.lambda_schedule.apply(self.model, epoch) if self.lambda_schedule else None
        lr = self.optimizer.param_groups[0]["lr"]
        self.train_sampler.set_epoch(epoch)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            **train_epoch(
                self.kit, self.train_loader, self._batches(), epoch, self.cfg.train, self.out
            ),
            **evaluate(self.kit, self.test_loader, self.cfg.train.max_batches),
            "lr": lr,
        }
        if lam is not None:
            row["lambda"] = lam
        self.scheduler.step()
        bad = nonfinite_tensors(self.model)
        if bad:
            raise Diverged(f"{bad[0]} holds non-finite values at the end", epoch, self.out)
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

    def _batches(self) -> int:
        """Training batches per epoch: the loader's, or fewer with ``train.max_batches``."""
        limit = self.cfg.train.max_batches
        return len(self.train_loader) if limit is None else min(limit, len(self.train_loader))

    def where(self) -> str:
        """The device by name, with the process count of a DDP run and the precision."""
        return where(self.device, self.info, self.kit.amp_dtype)

    def title(self) -> str:
        """What a figure of this run shows: run, model, neuron, data, device, precision."""
        return title(self.cfg, self.T, self.where())

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
        step = train_step(self.kit, x, y)
        t1 = time.perf_counter()
        if step is None:
            raise Diverged("the training loss is not finite in batch 1", 0, None)
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.kit.time_major(x))
        functional.reset_net(self.model)
        print(
            f"one batch: input {list(x.shape)} -> output {list(out.shape)}, "
            f"loss {step[0] / len(y):.4f}, train step {t1 - t0:.2f}s"
        )
        print("dry run OK")


def save_config(cfg: Config, out: Path) -> None:
    """The resolved config beside the run's outputs (what ``--resume`` reads back)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()
    ckpt.write_atomic(out / "config.yaml", lambda f: f.write(text))
