"""PNG plots of a sweep: time, speed-up over LIF (the PSN paper's Fig. 3), bandwidth, memory.

Every figure has one row of panels per mode (inference, training) and, for the curves against N',
one column per T. A series (a neuron on a backend) keeps its colour, line and marker in every
figure; the legend sits inside the figure, under the panels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from spikingjelly_psn import catalog
from spikingjelly_psn.ops import backends

from .cases import BASELINE_BACKEND, CONTROL

Row = dict[str, object]
Metric = Callable[[Row], float | None]

_COLOURS = {
    **{name: f"C{i}" for i, name in enumerate(catalog.BENCH_NAMES)},
    "lif": "black",
}
_LINES = {**dict(zip(backends.names(), ("-", "-.", ":"))), BASELINE_BACKEND: "--"}
_MARKERS = {**dict(zip(backends.names(), ("o", "^", "v"))), BASELINE_BACKEND: "s"}
_MODES = ("inference", "training")
# Mantissas of log-axis ticks, coarsest first: the first set that gives enough ticks is used.
_MANTISSAS = (
    (1.0,),
    (1.0, 2.0, 5.0),
    (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
    (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0),
)


def _series(row: Row) -> str:
    if row["backend"] == BASELINE_BACKEND:
        return str(row["neuron"])
    return f"{row['neuron']}/{row['backend']}"


def _style(row: Row) -> dict[str, object]:
    """Colour by neuron (psn and sj-psn share one), line and marker by backend; SpikingJelly's
    markers are hollow, so a baseline drawn over the plugin's curve leaves both visible."""
    base = str(row["neuron"]).removeprefix("sj-")
    backend = str(row["backend"])
    colour = _COLOURS.get(base, "grey")
    return {
        "color": colour,
        "linestyle": _LINES.get(backend, ":"),
        "marker": "D" if base == "lif" else _MARKERS.get(backend, "x"),
        "markersize": 5,
        "markerfacecolor": "white" if backend == BASELINE_BACKEND else colour,
        "linewidth": 1.4,
    }


def _ok(rows: list[Row], dtype: str) -> list[Row]:
    """Measured rows of ``dtype``; the control (a second SpikingJelly PSN) is not drawn."""
    return [
        r for r in rows if r["status"] == "ok" and r["dtype"] == dtype and r["neuron"] != CONTROL
    ]


def _modes(rows: list[Row]) -> list[str]:
    return [m for m in _MODES if any(r["mode"] == m for r in rows)]


def _power_of_two(n: int) -> str:
    exponent = math.log2(n)
    return f"$2^{{{exponent:g}}}$" if exponent.is_integer() else f"{n:,}"


def log_ticks(low: float, high: float, at_least: int = 4) -> list[float]:
    """Tick values for a log axis from ``low`` to ``high``: 1-2-5 per decade, finer on a short
    axis, and evenly spaced ones on an axis shorter than the finest set covers, so that about
    ``at_least`` ticks are labelled."""
    ticks: list[float] = []
    for mantissas in _MANTISSAS:
        ticks = [
            m * 10.0**e
            for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for m in mantissas
            if low <= m * 10.0**e <= high
        ]
        if len(ticks) >= at_least:
            return ticks
    even = MaxNLocator(nbins=at_least, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    even = [float(t) for t in even if low <= t <= high]
    return even if len(even) > len(ticks) else ticks


def _log_y(axes: list[Axes]) -> None:
    """Log y axes labelled with plain numbers (``0.5``, ``2``, ``20``) at :func:`log_ticks`."""
    for ax in axes:
        ax.set_yscale("log")
    low, high = axes[0].get_ylim()  # the panels of a row share their y axis
    for ax in axes:
        ax.yaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(low, high)


def _x_n_prime(ax: Axes, ns: list[int], label: bool) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ns))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _power_of_two(int(round(x)))))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if label:
        ax.set_xlabel("N' (neurons per time-step)")


def _legend(fig: Figure, handles: dict[str, object], columns: int = 4) -> None:
    """One legend for the figure, under its panels and inside its border."""
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(columns, len(handles)),
        fontsize=8,
        frameon=False,
    )


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def curves_figure(
    rows: list[Row], dtype: str, metric: Metric, ylabel: str, title: str, logy: bool
) -> Figure | None:
    """``metric`` against N': one panel per (mode, T), one line per neuron/backend."""
    ok = [r for r in _ok(rows, dtype) if metric(r) is not None]
    if not ok:
        return None
    Ts = sorted({int(r["T"]) for r in ok})
    modes = _modes(ok)
    ns = sorted({int(r["n_prime"]) for r in ok})
    fig = Figure(figsize=(3.4 * len(Ts) + 0.8, 2.9 * len(modes) + 1.2), layout="constrained")
    axes = fig.subplots(len(modes), len(Ts), squeeze=False, sharex=True, sharey="row")
    handles: dict[str, object] = {}
    for i, mode in enumerate(modes):
        for j, T in enumerate(Ts):
            ax = axes[i][j]
            pts = [r for r in ok if r["mode"] == mode and int(r["T"]) == T]
            for name in dict.fromkeys(_series(r) for r in pts):
                line = sorted((r for r in pts if _series(r) == name), key=_n_prime)
                xs, ys = [_n_prime(r) for r in line], [metric(r) for r in line]
                (handles[name],) = ax.plot(xs, ys, label=name, **_style(line[0]))
            _panel(ax, f"{mode}, T={T}", ns, ylabel if j == 0 else None, i == len(modes) - 1)
        if logy:
            _log_y(list(axes[i]))
        else:
            axes[i][0].set_ylim(bottom=0)
    fig.suptitle(f"{title}\n{dtype}, {ok[0]['device_name']}", fontsize=10)
    _legend(fig, handles)
    return fig


def _n_prime(row: Row) -> int:
    return int(row["n_prime"])


def _panel(ax: Axes, title: str, ns: list[int], ylabel: str | None, bottom: bool) -> None:
    ax.set_title(title, fontsize=9)
    _x_n_prime(ax, ns, label=bottom)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


def ratio_figure(rows: list[Row], dtype: str) -> Figure | None:
    """The PSN paper's Fig. 3: ``t_LIF / t_neuron`` against N', one panel per (mode, T)."""
    ok = [r for r in _ok(rows, dtype) if r.get("speedup_vs_lif") not in (None, "")]
    ok = [r for r in ok if r["neuron"] != "lif"]
    if not ok:
        return None
    lif_impl = next((r["impl"] for r in rows if r["neuron"] == "lif" and r["status"] == "ok"), "")
    fig = curves_figure(
        ok,
        dtype,
        lambda r: float(r["speedup_vs_lif"]),
        "t_LIF / t_neuron",
        f"Speed-up over SpikingJelly's LIF ({lif_impl}); above 1: faster than LIF "
        f"[PSN paper, Fig. 3]",
        logy=True,
    )
    for ax in fig.axes:
        ax.axhline(1.0, color="grey", linewidth=0.9, linestyle=":", zorder=0)
    return fig


def _per_element(key: str) -> Metric:
    def metric(r: Row) -> float | None:
        value = r.get(key)
        if value in (None, ""):
            return None
        return float(value) / (int(r["T"]) * int(r["n_prime"]))

    return metric


def memory_figure(rows: list[Row], dtype: str) -> Figure | None:
    """Bytes per neuron and time-step of each neuron/backend, one bar per T, at the largest N'.

    Memory per element hardly changes with N', so bars show it better than flat curves, and
    equal values stay apart. A mode whose every value is 0 (nothing is saved for backward in
    inference) gets no panel; the title says so.
    """
    has_peak = any(r.get("peak_mem_bytes") not in (None, "") for r in rows)
    key = "peak_mem_bytes" if has_peak else "saved_bytes"
    what = "peak bytes" if has_peak else "bytes saved for backward"
    metric = _per_element(key)
    ok = [r for r in _ok(rows, dtype) if metric(r) is not None]
    modes = [m for m in _modes(ok) if any(metric(r) for r in ok if r["mode"] == m)]
    if not modes:
        return None
    names = list(dict.fromkeys(_series(r) for r in ok))
    Ts = sorted({int(r["T"]) for r in ok})
    n_max = max(_n_prime(r) for r in ok)
    fig = Figure(figsize=(max(6.0, 0.32 * len(names) * len(Ts) + 2.0), 3.2 * len(modes) + 1.3))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(modes), 1, squeeze=False, sharex=True)
    colours = colormaps["viridis"]
    handles: dict[str, object] = {}
    width = 0.8 / len(Ts)
    for ax, mode in zip((row[0] for row in axes), modes):
        for t_index, T in enumerate(Ts):
            heights = [_largest(ok, name, mode, T, metric) for name in names]
            xs = [i + (t_index - (len(Ts) - 1) / 2) * width for i in range(len(names))]
            colour = colours(t_index / max(1, len(Ts) - 1) * 0.85)
            bars = ax.bar(xs, [h or 0.0 for h in heights], width, color=colour, label=f"T={T}")
            ax.bar_label(bars, [f"{h:.3g}" if h else "" for h in heights], fontsize=7)
            handles[f"T={T}"] = bars
        ax.set_title(mode, fontsize=9)
        ax.set_ylabel(f"{what}\nper neuron and step")
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1][0].set_xticks(range(len(names)), names, rotation=25, ha="right")
    dropped = [m for m in _modes(ok) if m not in modes]
    note = f"; {' and '.join(dropped)}: 0 bytes everywhere" if dropped else ""
    fig.suptitle(
        f"Memory per call, {what} / (T·N') at N' = {_power_of_two(n_max)}{note}\n"
        f"{dtype}, {ok[0]['device_name']}",
        fontsize=10,
    )
    _legend(fig, handles, columns=len(Ts))
    return fig


def _largest(ok: list[Row], name: str, mode: str, T: int, metric: Metric) -> float | None:
    """``metric`` of the series ``name`` at its largest N' for ``mode`` and ``T``."""
    pts = [r for r in ok if _series(r) == name and r["mode"] == mode and int(r["T"]) == T]
    return metric(max(pts, key=_n_prime)) if pts else None


def _in_percent(fig: Figure | None) -> Figure | None:
    """Label the y axes of a figure of fractions in percent."""
    for ax in fig.axes if fig is not None else ():
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:.3g}%"))
    return fig


def plot_all(rows: list[Row], out_dir: Path) -> list[Path]:
    """Every plot for every dtype of the sweep; returns the files written."""
    written: list[Path] = []
    for dtype in dict.fromkeys(str(r["dtype"]) for r in rows):
        figures = {
            "time_vs_n": curves_figure(
                rows,
                dtype,
                lambda r: float(r["median_ms"]),
                "median time per call (ms)",
                "Time per call",
                logy=True,
            ),
            "ratio_vs_lif": ratio_figure(rows, dtype),
            "bandwidth_fraction": _in_percent(
                curves_figure(
                    rows,
                    dtype,
                    lambda r: float(r["bw_fraction"]),
                    "achieved / copy bandwidth",
                    "Achieved bandwidth, as a share of a device-to-device copy's (measured in the same run)",
                    logy=False,
                )
            ),
            "memory": memory_figure(rows, dtype),
        }
        written += [_save(f, out_dir / f"{n}_{dtype}.png") for n, f in figures.items() if f]
    return written
