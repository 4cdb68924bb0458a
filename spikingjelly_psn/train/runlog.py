"""What a run leaves in its folder: metrics.jsonl, TensorBoard events, a learning curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """Per-epoch metrics to ``metrics.jsonl`` and (optionally) TensorBoard, in the run folder."""

    def __init__(self, out: Path, history: list[dict[str, Any]], tensorboard: bool) -> None:
        self.out = out
        self.history = list(history)
        # Rewrite the file from the checkpoint's history: a resumed run never duplicates epochs.
        with open(out / "metrics.jsonl", "w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=len(self.history) + 1)

    def log(self, row: dict[str, Any]) -> None:
        """Append one epoch's metrics."""
        self.history.append(row)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and accuracy (%) per epoch, train and test, as a PNG titled ``title``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, colour in (("train", "C0"), ("test", "C1")):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], color=colour, label=split)
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in history], color=colour, label=split)
    _loss_axis(ax_loss, [r[f"{s}_loss"] for r in history for s in ("train", "test")])
    _accuracy_axis(ax_acc, history)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)


def _loss_axis(ax, losses: list[float]) -> None:
    """A log scale when the loss falls by more than 10x (labelled 0.1, 0.2, 0.5, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finite = [v for v in losses if v > 0]
    if finite and max(finite) > 10 * min(finite):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(ylabel="loss (log scale)", title="loss")
    else:
        ax.set(ylabel="loss", title="loss")


def _accuracy_axis(ax, history: list[dict[str, Any]]) -> None:
    """Accuracy over the range that matters, with the best test epoch marked."""
    best = max(history, key=lambda r: r["test_acc"])
    ax.plot(best["epoch"], best["test_acc"], "*", color="C1", markersize=11)
    late = best["epoch"] > (history[0]["epoch"] + history[-1]["epoch"]) / 2
    ax.annotate(
        f"best {best['test_acc']:.2f}% (epoch {best['epoch']})",
        (best["epoch"], best["test_acc"]),
        textcoords="offset points",
        xytext=(-8 if late else 8, -14),
        ha="right" if late else "left",
        fontsize=8,
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )
    low, high = accuracy_limits(history)
    ax.set_ylim(low, high)
    clipped = any(r[k] < low for r in history for k in ("train_acc", "test_acc"))
    note = f" (from {low:.0f}%; the first epochs lie below)" if clipped else ""
    ax.set(ylabel="accuracy (%)", title=f"accuracy{note}")


def accuracy_limits(history: list[dict[str, Any]]) -> tuple[float, float]:
    """The accuracy axis: the range of the last three quarters of the run, with a margin.

    The first epochs of a run climb from chance; drawn to scale they squeeze the end of the
    run, where the accuracies that matter differ by tenths of a percent, into a sliver.
    """
    tail = history[len(history) // 4 :]
    values = [r[k] for r in tail for k in ("train_acc", "test_acc")]
    low, high = min(values), max(values)
    margin = max(0.1 * (high - low), 1.0)
    return max(0.0, low - margin), min(high + margin, 101.0)
