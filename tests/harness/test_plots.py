"""Tests for ``stages.harness.plots``: every helper draws under Agg and draws what it says.

Most tests draw on a bare :class:`~matplotlib.figure.Figure`, which needs no pyplot state; the
ones that let a helper make its own figure close it, so no figure outlives its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import matplotlib

matplotlib.use("Agg")  # headless, and the same everywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from stages.harness.bench import BenchResult  # noqa: E402
from stages.harness.plots import (  # noqa: E402
    bench_figure,
    plot_bars,
    plot_latency_cdf,
    plot_latency_hist,
    plot_p99_vs_concurrency,
    plot_timeline,
    plot_tps_vs_concurrency,
)


def result(
    scale: float = 1.0, *, concurrency: int = 1, label: str = "r", n: int = 200
) -> BenchResult:
    """A closed-loop-looking result with latencies from 50 µs to ~5 ms times ``scale``."""
    latencies = tuple(scale * 50e-6 * (1.0 + 99.0 * i / n) for i in range(n))
    return BenchResult(
        label=label,
        mode="sequential" if concurrency == 1 else "closed",
        concurrency=concurrency,
        offered_rate=None,
        latencies=latencies,
        elapsed=0.1 * scale,
    )


def failed() -> BenchResult:
    """A run where every call failed."""
    return BenchResult(
        label="down",
        mode="closed",
        concurrency=4,
        offered_rate=None,
        latencies=(),
        elapsed=0.1,
        errors=5,
        error_types={"ConnectionRefusedError": 5},
    )


CURVES = {
    "v1_0": {c: result(c / 4, concurrency=c, label="v1_0") for c in (1, 4, 16, 64)},
    "v2_0": {c: result(c / 8, concurrency=c, label="v2_0") for c in (1, 2, 8, 32)},
}


@pytest.fixture
def ax() -> Iterator[Axes]:
    """Axes on a bare Agg-rendered figure, drawn to make sure rendering works too."""
    fig = Figure()
    axes = fig.add_subplot()
    yield axes
    fig.canvas.draw()  # rendering problems (bad scales, bad data) surface here


def bars(ax: Axes) -> list[Rectangle]:
    """The bars on ``ax`` (the axes background patch is not in ``ax.patches``)."""
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_cdf_mapping(ax: Axes) -> None:
    out = plot_latency_cdf({"fast": result(1.0), "slow": result(10.0)}, ax=ax)
    assert out is ax
    assert len(ax.lines) == 2
    assert len(ax.collections) == 2  # p50/p99 dots, one scatter per line
    assert ax.get_xscale() == "log"
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[0].startswith("fast (p50 ") and "p99" in texts[0]


def test_cdf_sequence_names_by_label_and_shows_failed_runs(ax: Axes) -> None:
    plot_latency_cdf([result(label="a"), failed()], ax=ax)
    assert len(ax.lines) == 2
    assert len(ax.collections) == 1
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[0].startswith("a (") and texts[1] == "down (no successful call)"
    # The non-empty line ends at 1: every call is at most as slow as the slowest.
    assert np.asarray(ax.lines[0].get_ydata())[-1] == pytest.approx(1.0)


def test_hist(ax: Axes) -> None:
    named = {"fast": result(1.0), "slow": result(10.0), "down": failed()}
    out = plot_latency_hist(named, ax=ax, bins=20)
    assert out is ax
    assert len(ax.patches) == 2  # one step outline per result that had a success
    assert ax.get_xscale() == "log"


def test_hist_of_identical_latencies(ax: Axes) -> None:
    same = BenchResult(
        label="same",
        mode="sequential",
        concurrency=1,
        offered_rate=None,
        latencies=(1e-4,) * 10,
        elapsed=0.01,
    )
    plot_latency_hist([same], ax=ax)
    assert len(ax.patches) == 1


def test_hist_refuses_no_bins(ax: Axes) -> None:
    with pytest.raises(ValueError):
        plot_latency_hist([result()], ax=ax, bins=0)


def test_tps_vs_concurrency(ax: Axes) -> None:
    out = plot_tps_vs_concurrency(CURVES, ax=ax)
    assert out is ax
    assert len(ax.lines) == 2
    assert np.asarray(ax.lines[0].get_xdata()).tolist() == [1, 4, 16, 64]
    assert np.asarray(ax.lines[0].get_ydata()).tolist() == pytest.approx(
        [CURVES["v1_0"][c].tps for c in (1, 4, 16, 64)]
    )
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 4, 8, 16, 32, 64]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32", "64"]


def test_p99_vs_concurrency(ax: Axes) -> None:
    out = plot_p99_vs_concurrency(CURVES, ax=ax)
    assert out is ax
    assert len(ax.lines) == 2
    assert np.asarray(ax.lines[1].get_ydata()).tolist() == pytest.approx(
        [CURVES["v2_0"][c].p99 * 1e6 for c in (1, 2, 8, 32)]
    )
    assert ax.get_yscale() == "log"


def test_p99_with_a_failed_level(ax: Axes) -> None:
    plot_p99_vs_concurrency({"x": {1: result(), 4: failed()}}, ax=ax)
    assert len(ax.lines) == 1


def test_timeline(ax: Axes) -> None:
    events = [
        ("request 1", 0.0, 3.0),
        ("request 2", 0.5, 1.5),
        ("ping", 1.0, 1.0),  # zero-length: drawn as a tick
        ("request 1", 4.0, 5.0),
        ("ping", 2.0, 2.2),
    ]
    out = plot_timeline(events, ax=ax, xlabel="time (ms)")
    assert out is ax
    assert len(bars(ax)) == len(events)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["request 1", "request 2", "ping"]
    assert ax.get_xlabel() == "time (ms)"


def test_timeline_refuses_backwards_events(ax: Axes) -> None:
    with pytest.raises(ValueError):
        plot_timeline([("x", 2.0, 1.0)], ax=ax)


def test_bars(ax: Axes) -> None:
    sizes = {"json": 120.0, "pickle": 95.0, "protobuf": 31.0}
    out = plot_bars(sizes, ax=ax, ylabel="bytes")
    assert out is ax
    assert [b.get_height() for b in bars(ax)] == [120.0, 95.0, 31.0]
    assert ax.get_ylabel() == "bytes"
    assert len(ax.texts) == 3  # the value written over each bar


def test_empty_inputs_draw_nothing(ax: Axes) -> None:
    plot_timeline([], ax=ax)
    plot_bars({}, ax=ax)
    plot_latency_hist([], ax=ax)
    assert not ax.patches


def test_helpers_make_their_own_figure() -> None:
    draws: list[Callable[[], Axes]] = [
        lambda: plot_latency_cdf([result()]),
        lambda: plot_latency_hist([result()]),
        lambda: plot_tps_vs_concurrency(CURVES),
        lambda: plot_p99_vs_concurrency(CURVES),
        lambda: plot_timeline([("a", 0.0, 1.0)]),
        lambda: plot_bars({"a": 1.0}),
    ]
    for draw in draws:
        ax = draw()
        fig = ax.figure
        try:
            assert isinstance(ax, Axes) and isinstance(fig, Figure)
            fig.canvas.draw()
        finally:
            assert isinstance(fig, Figure)
            plt.close(fig)


def test_bench_figure() -> None:
    fig = bench_figure(CURVES)
    try:
        left, right = fig.axes
        assert len(left.lines) == 2 and len(right.lines) == 2
        assert right.get_yscale() == "log"
        fig.canvas.draw()
    finally:
        plt.close(fig)
