"""What a run prints: the line of each epoch, where it ran, and the closing summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import device_name
from .config import Config
from .data import DataBundle
from .dist import DistInfo


def count_parameters(net: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(net.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


AMP_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def where(device: torch.device, info: DistInfo, amp_dtype: torch.dtype | None) -> str:
    """The device by name, with the process count of a DDP run and the precision."""
    processes = f" x{info.world}" if info.enabled else ""
    precision = "fp32" if amp_dtype is None else f"{AMP_NAMES[amp_dtype]} autocast"
    return f"{device}: {device_name(device)}{processes}, {precision}"


def title(cfg: Config, T: int, where_line: str) -> str:
    """What a figure of a run shows: run, model, neuron, data, device, precision."""
    return (
        f"{cfg.name}: {cfg.model.name} with {cfg.neuron.name}, {cfg.data.dataset} (T={T})\n"
        f"{where_line}"
    )


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The console line of one epoch's ``metrics.jsonl`` row."""
    lam = f"  lambda {row['lambda']:.3f}" if "lambda" in row else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2f}%  "
        f"test loss {row['test_loss']:.4f} acc {row['test_acc']:6.2f}%  "
        f"{row['samples_per_s']:.0f} samples/s  {row['epoch_time_s']:.1f}s{lam}"
    )


def summary_rows(
    cfg: Config,
    out: Path | None,
    data: DataBundle,
    T: int,
    model: nn.Module,
    history: list[dict[str, Any]],
    best: tuple[float, int],
    elapsed: float,
    where_line: str,
) -> list[tuple[str, str]]:
    """The closing table of a run: what ran, on what, for how long, and how well."""
    final = history[-1]["test_acc"] if history else 0.0
    best_acc, best_epoch = best
    rows = [
        ("run", f"{cfg.name} ({out})"),
        ("model / neuron", f"{cfg.model.name} / {cfg.neuron.name}"),
        (
            "data",
            f"{cfg.data.dataset}, T={T}, {len(data.train)} train / {len(data.test)} test",
        ),
        ("parameters", f"{count_parameters(model)[0]:,}"),
        ("epochs", str(len(history))),
        ("final test accuracy", f"{final:.2f}%"),
        ("best test accuracy", f"{max(best_acc, 0.0):.2f}% (epoch {best_epoch})"),
        ("wall time (this session)", f"{elapsed:.1f}s"),
        ("device", where_line),
    ]
    if cfg.reference.accuracy is not None:
        ref = cfg.reference
        rows.append(("paper reports", f"{ref.accuracy}% ({ref.paper}, {ref.table})"))
    return rows


def summary_table(rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    body = [f"| {k:<{width}} | {v:<{vwidth}} |" for k, v in rows]
    return "\n".join([line, *body, line])
