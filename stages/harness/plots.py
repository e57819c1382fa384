"""Matplotlib figures shared by every notebook: latency distributions, throughput curves, timelines.

Conventions, so that figures from different stages can be put side by side:

* Every ``plot_*`` function takes an optional ``ax`` and returns the :class:`~matplotlib.axes.Axes`
  it drew on. Without ``ax`` it makes a new figure with :func:`matplotlib.pyplot.subplots`, so a
  notebook shows it inline at the end of the cell; with ``ax`` it only draws there, which is what
  tests and composite figures do (a bare :class:`~matplotlib.figure.Figure` needs no backend).
* Nothing here calls ``plt.show()`` or picks a backend: the caller owns the display.
* Latencies are drawn in microseconds on a log axis, because an RPC's latency spans orders of
  magnitude (tens of µs on loopback, hundreds of ms behind a queue).
* Concurrency axes are log2 with the measured levels as ticks: levels are usually powers of two
  and a reader should see exactly which ones were measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from stages.harness.bench import BenchResult, format_duration

__all__ = [
    "bench_figure",
    "plot_bars",
    "plot_latency_cdf",
    "plot_latency_hist",
    "plot_p99_vs_concurrency",
    "plot_timeline",
    "plot_tps_vs_concurrency",
]

Results = Mapping[str, BenchResult] | Sequence[BenchResult]
"""Named results (the key is the legend entry) or a sequence of results (named by their label)."""

Curves = Mapping[str, Mapping[int, BenchResult]]
"""Curve name -> concurrency level -> result, as returned by ``measure_concurrency_sweep``."""

US: Final = 1e6  # seconds -> microseconds


def _axes(ax: Axes | None) -> Axes:
    """The given axes, or those of a new pyplot figure (so notebooks display it)."""
    if ax is not None:
        return ax
    _, new_ax = plt.subplots(layout="constrained")
    return new_ax


def _name(result: BenchResult) -> str:
    """A legend entry for an unnamed result: its label, else its mode and concurrency."""
    if result.label:
        return result.label
    if result.mode == "closed":
        return f"closed C={result.concurrency}"
    if result.mode == "open":
        return f"open {result.offered_rate:,.0f}/s"
    return result.mode


def _named(results: Results) -> list[tuple[str, BenchResult]]:
    """Normalise both accepted shapes of ``results`` to (name, result) pairs, in order."""
    if isinstance(results, Mapping):
        return [(str(name), result) for name, result in results.items()]
    return [(_name(result), result) for result in results]


def _latencies_us(result: BenchResult) -> np.ndarray:
    """Successful latencies in µs, sorted; zeros dropped because a log axis cannot show them."""
    data = np.sort(np.asarray(result.latencies, dtype=float)) * US
    return data[data > 0]


def plot_latency_cdf(results: Results, ax: Axes | None = None) -> Axes:
    """Draw the cumulative distribution of latency, one line per result.

    The x axis is latency in µs (log scale), the y axis the fraction of calls at most that slow.
    A dot marks p50 and p99 on each line, and the legend quotes them. A result with no
    successful call gets an empty line, so it still appears in the legend, as such.

    Args:
        results: Named results, or results named by their label.
        ax: Axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes: one line per result, plus one scatter (the p50/p99 dots) per non-empty line.
    """
    ax = _axes(ax)
    for name, result in _named(results):
        data = _latencies_us(result)
        if data.size == 0:
            # An empty line keeps the legend honest without putting nothing on a log axis.
            ax.plot([], [], linestyle="none", label=f"{name} (no successful call)")
            continue
        fraction = np.arange(1, data.size + 1) / data.size
        quoted = f"p50 {format_duration(result.p50)}, p99 {format_duration(result.p99)}"
        (line,) = ax.step(data, fraction, where="post", label=f"{name} ({quoted})")
        ax.scatter(
            [result.p50 * US, result.p99 * US],
            [0.50, 0.99],
            color=line.get_color(),
            zorder=3,
            s=20,
        )
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("latency (µs, log scale)")
    ax.set_ylabel("fraction of calls")
    ax.set_title("Latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_latency_hist(results: Results, ax: Axes | None = None, bins: int = 50) -> Axes:
    """Draw latency histograms, one outline per result, on shared log-spaced bins.

    Args:
        results: Named results, or results named by their label.
        ax: Axes to draw on; ``None`` makes a new figure.
        bins: Number of bins, ``>= 1``, spaced evenly on the log axis (equal-width bins would
            squeeze the fast calls into one bar).

    Returns:
        The axes: one step patch per result that had a success.

    Raises:
        ValueError: If ``bins < 1``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, not {bins}")
    ax = _axes(ax)
    named = [(name, _latencies_us(result)) for name, result in _named(results)]
    drawn = [(name, data) for name, data in named if data.size]
    if drawn:
        lo = min(float(data[0]) for _, data in drawn)
        hi = max(float(data[-1]) for _, data in drawn)
        if hi <= lo:  # every latency equal: give the single bar some width
            lo, hi = lo / 1.5, hi * 1.5
        edges = np.geomspace(lo, hi, bins + 1)
        for name, data in drawn:
            ax.hist(data, bins=edges.tolist(), histtype="step", linewidth=1.5, label=name)
        ax.set_xscale("log")
        ax.legend(fontsize="small")
    ax.set_xlabel("latency (µs, log scale)")
    ax.set_ylabel("calls")
    ax.set_title("Latency histogram")
    return ax


def _concurrency_axis(ax: Axes, levels: Iterable[int]) -> None:
    """Make the x axis log2 with exactly the measured levels as ticks."""
    ticks = sorted(set(levels))
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("calls in flight (log2 scale)")


def _plot_vs_concurrency(
    curves: Curves, ax: Axes | None, value: str, ylabel: str, title: str
) -> Axes:
    """One line per curve of ``value`` (``"tps"`` or ``"p99"``) against concurrency."""
    ax = _axes(ax)
    levels: set[int] = set()
    for name, curve in curves.items():
        points = sorted(curve.items())
        xs = [level for level, _ in points]
        if value == "tps":
            ys = [result.tps for _, result in points]
        else:
            ys = [result.p99 * US for _, result in points]  # nan (no success) leaves a gap
        ax.plot(xs, ys, marker="o", label=name)
        levels.update(xs)
    _concurrency_axis(ax, levels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    return ax


def plot_tps_vs_concurrency(curves: Curves, ax: Axes | None = None) -> Axes:
    """Draw throughput against calls in flight, one line per curve.

    Throughput rises with concurrency while the server has idle capacity and flattens once it
    saturates; where it flattens is the number to remember.

    Args:
        curves: Curve name -> level -> result (e.g. one ``measure_concurrency_sweep`` per stage).
        ax: Axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes: one line per curve.
    """
    ax = _plot_vs_concurrency(curves, ax, "tps", "successful calls/s", "Throughput")
    ax.set_ylim(bottom=0)
    return ax


def plot_p99_vs_concurrency(curves: Curves, ax: Axes | None = None) -> Axes:
    """Draw p99 latency (µs, log scale) against calls in flight, one line per curve.

    Past saturation, Little's law makes latency grow in proportion to calls in flight, which is a
    straight line on these log axes.

    Args:
        curves: Curve name -> level -> result.
        ax: Axes to draw on; ``None`` makes a new figure.

    Returns:
        The axes: one line per curve.
    """
    ax = _plot_vs_concurrency(curves, ax, "p99", "p99 latency (µs, log scale)", "Tail latency")
    if any(r.latencies for curve in curves.values() for r in curve.values()):
        ax.set_yscale("log")
    return ax


def plot_timeline(
    events: Sequence[tuple[str, float, float]],
    ax: Axes | None = None,
    *,
    xlabel: str = "time (s)",
) -> Axes:
    """Draw events as horizontal bars on a time axis, one row per distinct label.

    Used to show requests and answers interleaving on one connection, or a heartbeat noticing a
    dead peer. Events sharing a label share a row (e.g. every ``"ping"``); rows appear top-down in
    order of first appearance. A zero-length event is drawn as a thin tick.

    Args:
        events: ``(label, start, end)`` triples in any time unit (say which in ``xlabel``).
        ax: Axes to draw on; ``None`` makes a new figure.
        xlabel: Label of the time axis.

    Returns:
        The axes: one bar (rectangle patch) per event.

    Raises:
        ValueError: If an event ends before it starts.
    """
    ax = _axes(ax)
    rows: dict[str, int] = {}
    for label, start, end in events:
        if end < start:
            raise ValueError(f"event {label!r} ends ({end}) before it starts ({start})")
        rows.setdefault(label, len(rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    if events:
        ys = [rows[label] for label, _, _ in events]
        colour = [colours[y % len(colours)] for y in ys]
        ax.barh(
            ys,
            [end - start for _, start, end in events],
            left=[start for _, start, _ in events],
            height=0.6,
            color=colour,
            # The edge keeps zero-length events visible as a tick.
            edgecolor=colour,
            linewidth=1.0,
        )
    ax.set_yticks(list(rows.values()), labels=list(rows))
    if rows:
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first label on top, like a sequence diagram
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    return ax


def plot_bars(values: Mapping[str, float], ax: Axes | None = None, ylabel: str = "") -> Axes:
    """Draw one labelled bar per entry, with its value written on top.

    Args:
        values: Name -> value (e.g. serializer -> encoded size in bytes), drawn in order.
        ax: Axes to draw on; ``None`` makes a new figure.
        ylabel: Label of the value axis.

    Returns:
        The axes: one bar (rectangle patch) per entry.
    """
    ax = _axes(ax)
    names = [str(name) for name in values]
    container = ax.bar(names, list(values.values()), color="C0")
    ax.bar_label(container, fmt="{:,.4g}", fontsize="small")
    ax.set_ylabel(ylabel)
    ax.margins(y=0.12)  # room for the value labels above the tallest bar
    if len(names) > 4:
        ax.tick_params(axis="x", labelrotation=30)
    return ax


def bench_figure(curves: Curves) -> Figure:
    """A 1x2 figure: throughput and p99 latency against calls in flight.

    Args:
        curves: Curve name -> level -> result.

    Returns:
        The figure (made with pyplot, so a notebook shows it inline; end the cell with ``;`` or
        assign the result to avoid seeing it twice).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    plot_tps_vs_concurrency(curves, ax=left)
    plot_p99_vs_concurrency(curves, ax=right)
    return fig
