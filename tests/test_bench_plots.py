"""The bench's figures: readable log ticks, legends inside, no empty panels, distinct series."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from spikingjelly_psn.bench.plots import (
    curves_figure,
    log_ticks,
    memory_figure,
    plot_all,
    ratio_figure,
)

SERIES = [("psn", "torch"), ("psn", "cupy"), ("masked", "torch"), ("sj-psn", "spikingjelly")]
SERIES += [("sj-masked", "spikingjelly"), ("mfpsn", "torch"), ("lif", "spikingjelly")]


def _rows(Ts=(4, 8), Ns=(4096, 16384), peak: bool = False) -> list[dict[str, object]]:
    """A small sweep; memory is the same for several neurons, as on a real run."""
    rows = []
    for (neuron, backend), T, n, mode in itertools.product(
        SERIES, Ts, Ns, ("inference", "training")
    ):
        training = mode == "training"
        saved = (8 if neuron != "mfpsn" else 20) * T * n if training else 0
        rows.append(
            {
                "neuron": neuron,
                "backend": backend,
                "impl": "torch-reference" if neuron == "lif" else backend,
                "dtype": "fp32",
                "T": T,
                "n_prime": n,
                "mode": mode,
                "status": "ok",
                "median_ms": 0.1 * n / 4096 * (2 if training else 1),
                "bw_fraction": 0.02,
                "speedup_vs_lif": 1.0 if neuron == "lif" else 1.3 + 0.1 * len(neuron),
                "saved_bytes": saved,
                "peak_mem_bytes": 3 * saved + 4 * T * n if peak else "",
                "device_name": "Test CPU (1 thread)",
            }
        )
    return rows


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.1, 10.0, [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]),
        (1.1, 2.6, [1.2, 1.5, 2.0, 2.5]),  # a short axis still gets four labels
        (0.9, 6.0, [1.0, 1.5, 2.0, 3.0, 5.0]),
    ],
)
def test_log_ticks(low, high, expected):
    assert log_ticks(low, high) == pytest.approx(expected)


def _figures(rows):
    return {
        "time": curves_figure(rows, "fp32", lambda r: r["median_ms"], "ms", "Time", logy=True),
        "ratio": ratio_figure(rows, "fp32"),
        "memory": memory_figure(rows, "fp32"),
    }


@pytest.mark.parametrize("name", ["time", "ratio", "memory"])
def test_legend_lies_inside_the_figure(name):
    fig = _drawn(_figures(_rows())[name])
    (legend,) = fig.legends
    box, page = legend.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


def test_curves_have_one_row_per_mode_and_one_column_per_T():
    fig = _figures(_rows(Ts=(4, 8, 16)))["ratio"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"{m}, T={T}" for m in ("inference", "training") for T in (4, 8, 16)]


def test_series_in_a_panel_can_be_told_apart():
    fig = _figures(_rows())["time"]
    for ax in fig.axes:
        looks = [
            (line.get_color(), line.get_linestyle(), line.get_marker(), line.get_markerfacecolor())
            for line in ax.get_lines()
        ]
        assert len(looks) == len(SERIES) and len(set(looks)) == len(looks)


def test_short_log_axis_labels_several_ticks():
    fig = _drawn(_figures(_rows())["ratio"])
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        low, high = ax.get_ylim()
        shown = [t for t in ax.get_yticks() if low <= t <= high]
        assert len(shown) >= 3, (ax.get_title(), shown)
        assert not labels or len(labels) >= 3  # shared rows label the first panel only


def test_memory_drops_modes_that_are_zero_everywhere():
    fig = _figures(_rows())["memory"]
    assert [ax.get_title() for ax in fig.axes] == ["training"]
    assert "inference: 0 bytes everywhere" in fig._suptitle.get_text()
    (ax,) = fig.axes
    # Equal values are separate bars, each labelled with its value.
    values = [text.get_text() for text in ax.texts]
    assert values.count("8") == 6 * 2  # every series but mfpsn (20), at T = 4 and 8
    assert values.count("20") == 2


def test_memory_keeps_inference_when_it_has_a_peak():
    fig = _figures(_rows(peak=True))["memory"]
    assert [ax.get_title() for ax in fig.axes] == ["inference", "training"]


def test_plot_all_writes_one_png_per_figure(tmp_path):
    written = plot_all(_rows(), tmp_path)
    assert sorted(p.name for p in written) == [
        "bandwidth_fraction_fp32.png",
        "memory_fp32.png",
        "ratio_vs_lif_fp32.png",
        "time_vs_n_fp32.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
