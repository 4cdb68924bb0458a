"""PNG plots of a sweep: time, speed-up over LIF (the PSN paper's Fig. 3), bandwidth, memory."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .cases import BASELINE_BACKEND

_COLOURS = {"psn": "C0", "masked": "C1", "sliding": "C2", "mfpsn": "C3", "lif": "black"}
_STYLES = {"torch": "-", "cupy": "-.", BASELINE_BACKEND: "--"}


def _series(row: dict[str, object]) -> str:
    if row["backend"] == BASELINE_BACKEND:
        return str(row["neuron"])
    return f"{row['neuron']}/{row['backend']}"


def _style(row: dict[str, object]) -> dict[str, object]:
    base = str(row["neuron"]).removeprefix("sj-")
    return {
        "color": _COLOURS.get(base, "grey"),
        "linestyle": _STYLES.get(str(row["backend"]), ":"),
        "marker": "o",
        "markersize": 3,
    }


def _ok(rows: list[dict[str, object]], dtype: str) -> list[dict[str, object]]:
    return [r for r in rows if r["status"] == "ok" and r["dtype"] == dtype]


def _figure(n_rows: int, n_cols: int) -> tuple[Figure, list[list[object]]]:
    fig = Figure(figsize=(4.6 * n_cols + 1.8, 3.0 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _log_y(ax) -> None:
    """Log y axis labelled 1, 2, 5 x 10^n in plain numbers."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def grid_plot(
    rows: list[dict[str, object]],
    dtype: str,
    metric,
    ylabel: str,
    title: str,
    path: Path,
    logy: bool,
) -> Path | None:
    """One panel per (T, mode), one line per neuron/backend; x = N' (log2 scale)."""
    ok = [r for r in _ok(rows, dtype) if metric(r) is not None]
    if not ok:
        return None
    Ts = sorted({int(r["T"]) for r in ok})
    modes = [m for m in ("inference", "training") if any(r["mode"] == m for r in ok)]
    fig, axes = _figure(len(Ts), len(modes))
    handles: dict[str, object] = {}
    for i, T in enumerate(Ts):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            lines: dict[str, list[dict[str, object]]] = defaultdict(list)
            for r in ok:
                if int(r["T"]) == T and r["mode"] == mode:
                    lines[_series(r)].append(r)
            for name, pts in lines.items():
                pts.sort(key=lambda r: int(r["n_prime"]))
                xs = [int(r["n_prime"]) for r in pts]
                ys = [metric(r) for r in pts]
                (handles[name],) = ax.plot(xs, ys, label=name, **_style(pts[0]))
            ax.set_xscale("log", base=2)
            if logy:
                _log_y(ax)
            else:
                ax.set_ylim(bottom=0)
            ax.set_title(f"{mode}, T={T}", fontsize=9)
            ax.set_xlabel("N' (neurons per time-step)")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"{title} ({dtype}, {ok[0]['device_name']})", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    return _save(fig, path)


def ratio_plot(rows: list[dict[str, object]], dtype: str, path: Path) -> Path | None:
    """The PSN paper's Fig. 3: ``t_LIF / t_neuron`` over N', one line per T, per neuron and mode."""
    ok = [r for r in _ok(rows, dtype) if r.get("speedup_vs_lif") not in (None, "")]
    ok = [r for r in ok if r["neuron"] != "lif"]
    if not ok:
        return None
    names = list(dict.fromkeys(_series(r) for r in ok))
    modes = [m for m in ("inference", "training") if any(r["mode"] == m for r in ok)]
    Ts = sorted({int(r["T"]) for r in ok})
    cmap = colormaps["viridis"]
    colour = {T: cmap(i / max(1, len(Ts) - 1)) for i, T in enumerate(Ts)}
    lif_impl = next((r["impl"] for r in rows if r["neuron"] == "lif" and r["status"] == "ok"), "")
    fig, axes = _figure(len(names), len(modes))
    handles: dict[str, object] = {}
    for i, name in enumerate(names):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for T in Ts:
                pts = [
                    r for r in ok if _series(r) == name and r["mode"] == mode and int(r["T"]) == T
                ]
                if not pts:
                    continue
                pts.sort(key=lambda r: int(r["n_prime"]))
                xs = [int(r["n_prime"]) for r in pts]
                ys = [float(r["speedup_vs_lif"]) for r in pts]
                (handles[f"T={T}"],) = ax.plot(xs, ys, marker="o", markersize=3, color=colour[T])
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xscale("log", base=2)
            _log_y(ax)
            ax.set_title(f"{name}, {mode}", fontsize=9)
            ax.set_xlabel("N' (neurons per time-step)")
            ax.set_ylabel("t_LIF / t_neuron")
            ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Speed-up over LIF ({lif_impl}), {dtype}, {ok[0]['device_name']}  [PSN paper Fig. 3]",
        fontsize=10,
    )
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    return _save(fig, path)


def _per_element(key: str):
    def metric(r: dict[str, object]) -> float | None:
        value = r.get(key)
        if value in (None, ""):
            return None
        return float(value) / (int(r["T"]) * int(r["n_prime"]))

    return metric


def plot_all(rows: list[dict[str, object]], out_dir: Path) -> list[Path]:
    """Every plot for every dtype of the sweep; returns the files written."""
    written: list[Path] = []
    has_peak = any(r.get("peak_mem_bytes") not in (None, "") for r in rows)
    mem_key = "peak_mem_bytes" if has_peak else "saved_bytes"
    mem_label = "peak bytes / (T·N')" if has_peak else "saved-for-backward bytes / (T·N')"
    for dtype in dict.fromkeys(str(r["dtype"]) for r in rows):
        plots = [
            grid_plot(
                rows,
                dtype,
                lambda r: float(r["median_ms"]),
                "median time per call (ms)",
                "Time per call",
                out_dir / f"time_vs_n_{dtype}.png",
                logy=True,
            ),
            ratio_plot(rows, dtype, out_dir / f"ratio_vs_lif_{dtype}.png"),
            grid_plot(
                rows,
                dtype,
                lambda r: float(r["bw_fraction"]),
                "achieved / copy bandwidth",
                "Fraction of the measured copy bandwidth",
                out_dir / f"bandwidth_fraction_{dtype}.png",
                logy=False,
            ),
            grid_plot(
                rows,
                dtype,
                _per_element(mem_key),
                mem_label,
                "Memory per call",
                out_dir / f"memory_{dtype}.png",
                logy=False,
            ),
        ]
        written.extend(p for p in plots if p is not None)
    return written
