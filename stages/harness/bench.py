"""Measuring an asynchronous call: latency percentiles and throughput.

Every stage's ``bench`` command, every notebook and the benchmarks measure the same thing, one
RPC, given as a zero-argument coroutine function ``call``. This module knows nothing about RPC:
it times ``await call()`` and reports what it saw as a frozen :class:`BenchResult`.

Three ways to drive the call
============================

=============================  ================================================================
function                       what it models
=============================  ================================================================
:func:`measure_sequential`     one caller, one call at a time; the pure round-trip latency
:func:`measure_closed_loop`    ``C`` callers that each send the next call as soon as the last
                               returned (a fixed population of users; "calls in flight = C")
:func:`measure_open_loop`      calls *arrive* at a fixed rate whatever the server is doing
                               (independent users; the only honest way to see queueing)
=============================  ================================================================

:func:`measure_concurrency_sweep` runs the closed loop at several concurrency levels, which is
the data behind the "throughput vs calls in flight" plots in ``stages.harness.plots``.

Rules shared by all of them
===========================

* Warm-up calls run first (same shape of load) and never appear in the figures: the first
  calls pay for connection set-up, code-path caches and the allocator growing.
* An ``Exception`` raised by a call is counted (by exception type name) and the run goes on;
  only successful calls contribute a latency. ``BaseException`` (``CancelledError``,
  ``KeyboardInterrupt``) is *not* caught: cancelling a benchmark must cancel it.
* Time is :func:`time.perf_counter`. The measuring loop does one clock read before and one after
  each call and appends one float to a list, nothing more, because it is used on a pure-Python
  RPC doing ~100k calls/s where a heavier harness would measure itself.

Run length
==========

:func:`run_length` reads the environment variable ``RPC_BENCH``: ``full`` asks for the long run
(benchmarks quoted in the docs), ``short`` or unset gives the short run used by notebooks and
CI. Several runs of one configuration are summarised with :func:`median_of`; the docs quote
medians, never a single lucky run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "BenchResult",
    "Call",
    "Mode",
    "OUTSTANDING_LIMIT_ERROR",
    "RESULTS_FORMAT",
    "default_warmup",
    "format_duration",
    "load_results",
    "measure_closed_loop",
    "measure_concurrency_sweep",
    "measure_open_loop",
    "measure_sequential",
    "median_of",
    "run_length",
    "save_results",
]

Call = Callable[[], Awaitable[object]]
"""One RPC: a zero-argument callable returning an awaitable, e.g. ``lambda: client.echo(b"x")``."""

Mode = Literal["sequential", "closed", "open"]

MODES: Final = frozenset({"sequential", "closed", "open"})

OUTSTANDING_LIMIT_ERROR: Final = "OutstandingLimitExceeded"
"""Error-type name counted for an open-loop call due while ``max_outstanding`` are in flight."""

RESULTS_FORMAT: Final = "rpc-walkthrough/bench-results"
RESULTS_VERSION: Final = 1

DEFAULT_MAX_OUTSTANDING: Final = 10_000

# How long before a due time the open loop stops sleeping and starts yielding (seconds): a bit
# more than the 1 ms granularity of the event loop's timers (see _open_phase).
_SPIN_WINDOW: Final = 0.002

# Keys of BenchResult.summary() whose values are latencies in microseconds, with the percentile.
_SUMMARY_PERCENTILES: Final = (("p50_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0))


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """What one measured run saw.

    Attributes:
        label: Free text naming what was measured (``"v1_0 echo"``); may be empty.
        mode: ``"sequential"``, ``"closed"`` or ``"open"``.
        concurrency: Calls allowed in flight: 1 for sequential, ``C`` for the closed loop, the
            ``max_outstanding`` cap for the open loop.
        offered_rate: Calls per second offered by the open loop; ``None`` for the other modes.
        latencies: Seconds, one per *successful* measured call, in completion order (so an open
            loop's queue building up is visible as a rising sequence).
        elapsed: Seconds of the measured phase (warm-up excluded).
        errors: Measured calls that raised (or, in the open loop, were refused because too many
            were outstanding).
        error_types: Exception type name -> count; read-only, sums to ``errors``.

    Percentiles use linear interpolation between closest ranks (numpy's default ``"linear"``
    method, Hyndman & Fan type 7), so ``percentile(0)`` is the minimum and ``percentile(100)``
    the maximum. With no successful call every latency statistic is ``nan``.
    """

    label: str
    mode: str
    concurrency: int
    offered_rate: float | None
    latencies: tuple[float, ...]
    elapsed: float
    errors: int = 0
    # hash=False: a mapping is not hashable, but the result should still be usable as a dict key.
    error_types: Mapping[str, int] = field(default_factory=dict, hash=False)
    # Sorted once here so every percentile query is O(1); derived, so not part of equality.
    _sorted: tuple[float, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        """Validate and normalise the fields.

        Raises:
            ValueError: On an unknown mode, a concurrency below 1, a negative elapsed time or
                error count, a non-positive offered rate, or error types that do not add up.
        """
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {self.mode!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {self.concurrency}")
        if self.offered_rate is not None and not self.offered_rate > 0:
            raise ValueError(f"offered_rate must be > 0 or None, not {self.offered_rate}")
        if not self.elapsed >= 0:
            raise ValueError(f"elapsed must be >= 0, not {self.elapsed}")
        if self.errors < 0:
            raise ValueError(f"errors must be >= 0, not {self.errors}")
        # object.__setattr__ is how a frozen dataclass normalises its own fields.
        latencies = tuple(float(x) for x in self.latencies)
        object.__setattr__(self, "latencies", latencies)
        error_types = {str(k): int(v) for k, v in sorted(self.error_types.items())}
        if sum(error_types.values()) != self.errors:
            raise ValueError(f"error_types {error_types} do not add up to errors={self.errors}")
        # A read-only view: the dataclass is frozen, its contents should be too.
        object.__setattr__(self, "error_types", MappingProxyType(error_types))
        object.__setattr__(self, "_sorted", tuple(sorted(latencies)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle through the constructor (a ``mappingproxy`` cannot be pickled itself).

        Returns:
            The class and the constructor arguments.
        """
        return (
            type(self),
            (
                self.label,
                self.mode,
                self.concurrency,
                self.offered_rate,
                self.latencies,
                self.elapsed,
                self.errors,
                dict(self.error_types),
            ),
        )

    # -- counts -------------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        """Measured calls, successful or not (warm-up excluded)."""
        return len(self.latencies) + self.errors

    @property
    def successes(self) -> int:
        """Measured calls that returned normally."""
        return len(self.latencies)

    @property
    def tps(self) -> float:
        """Successful calls per second of the measured phase.

        ``0.0`` when nothing succeeded; ``inf`` if calls succeeded in no measurable time.
        """
        if not self.latencies:
            return 0.0
        if self.elapsed <= 0:
            return math.inf
        return len(self.latencies) / self.elapsed

    # -- latency statistics --------------------------------------------------------------------

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the successful latencies, in seconds.

        Linear interpolation between the two closest ranks: with ``n`` sorted latencies the
        position is ``q / 100 * (n - 1)``. The result is monotone in ``q`` and lies between the
        minimum (``q = 0``) and maximum (``q = 100``) latency.

        Args:
            q: Percentile, ``0 <= q <= 100``.

        Returns:
            The latency in seconds, or ``nan`` when no call succeeded.

        Raises:
            ValueError: If ``q`` is outside ``0..100`` or is ``nan``.
        """
        if not 0.0 <= q <= 100.0:  # also rejects nan
            raise ValueError(f"percentile q must be within 0..100, not {q}")
        data = self._sorted
        if not data:
            return math.nan
        position = q / 100.0 * (len(data) - 1)
        below = math.floor(position)
        if below >= len(data) - 1:
            return data[-1]
        lo, hi = data[below], data[below + 1]
        value = lo + (hi - lo) * (position - below)
        # Rounding in `lo + (hi - lo) * f` can step a hair outside [lo, hi]; clamping keeps the
        # result monotone in q across neighbouring ranks.
        return min(max(value, lo), hi)

    @property
    def p50(self) -> float:
        """Median latency in seconds (``nan`` if nothing succeeded)."""
        return self.percentile(50.0)

    @property
    def p90(self) -> float:
        """90th percentile latency in seconds (``nan`` if nothing succeeded)."""
        return self.percentile(90.0)

    @property
    def p99(self) -> float:
        """99th percentile latency in seconds (``nan`` if nothing succeeded)."""
        return self.percentile(99.0)

    @property
    def max(self) -> float:
        """Largest latency in seconds (``nan`` if nothing succeeded)."""
        return self._sorted[-1] if self._sorted else math.nan

    @property
    def min(self) -> float:
        """Smallest latency in seconds (``nan`` if nothing succeeded)."""
        return self._sorted[0] if self._sorted else math.nan

    @property
    def mean(self) -> float:
        """Mean latency in seconds (``nan`` if nothing succeeded)."""
        return math.fsum(self.latencies) / len(self.latencies) if self.latencies else math.nan

    # -- reporting -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest, one row of a results table.

        Returns:
            ``label``, ``mode``, ``concurrency``, ``offered_rate``, ``calls``, ``errors``,
            ``tps`` (calls/s) and ``p50_us``, ``p90_us``, ``p99_us``, ``max_us`` (microseconds).
            Latency values are ``None`` when no call succeeded (JSON has no ``nan``).
        """
        row: dict[str, Any] = {
            "label": self.label,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "offered_rate": self.offered_rate,
            "calls": self.calls,
            "errors": self.errors,
            "tps": _json_float(self.tps, 1),
        }
        for key, q in _SUMMARY_PERCENTILES:
            row[key] = _json_float(self.percentile(q) * 1e6, 3)
        row["max_us"] = _json_float(self.max * 1e6, 3)
        return row

    def to_record(self, *, include_latencies: bool = False) -> dict[str, Any]:
        """The summary plus what is needed to rebuild the result (see :meth:`from_record`).

        Args:
            include_latencies: Also store every raw latency (large: one float per call).

        Returns:
            :meth:`summary` extended with ``elapsed``, ``error_types`` and, if asked,
            ``latencies``.
        """
        record = self.summary()
        record["elapsed"] = self.elapsed
        record["error_types"] = dict(self.error_types)
        if include_latencies:
            record["latencies"] = list(self.latencies)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BenchResult:
        """Rebuild a result saved with ``include_latencies=True``.

        Args:
            record: One element of :func:`load_results`.

        Returns:
            An equal :class:`BenchResult`.

        Raises:
            ValueError: If the record has no raw latencies (summaries alone cannot be turned
                back into a result) or is inconsistent.
        """
        if "latencies" not in record:
            raise ValueError("record has no raw latencies; save with include_latencies=True")
        result = cls(
            label=record["label"],
            mode=record["mode"],
            concurrency=record["concurrency"],
            offered_rate=record["offered_rate"],
            latencies=tuple(record["latencies"]),
            elapsed=record["elapsed"],
            errors=record["errors"],
            error_types=record["error_types"],
        )
        if result.calls != record["calls"]:
            raise ValueError(f"record says {record['calls']} calls, found {result.calls}")
        return result

    def __str__(self) -> str:
        """One line for humans, e.g. ``echo [closed C=16] 20000 calls ... p99 1.91 ms``."""
        if self.mode == "open":
            shape = f"open {self.offered_rate:,.0f}/s, <={self.concurrency} in flight"
        elif self.mode == "closed":
            shape = f"closed C={self.concurrency}"
        else:
            shape = "sequential"
        name = f"{self.label} " if self.label else ""
        return (
            f"{name}[{shape}] {self.calls} calls, {self.errors} failed, in {self.elapsed:.3g} s: "
            f"{self.tps:,.0f} calls/s; p50 {format_duration(self.p50)}, "
            f"p90 {format_duration(self.p90)}, p99 {format_duration(self.p99)}, "
            f"max {format_duration(self.max)}"
        )


def _json_float(value: float, digits: int) -> float | None:
    """Round for a table, mapping ``nan``/``inf`` to ``None`` because JSON cannot carry them."""
    return round(value, digits) if math.isfinite(value) else None


def format_duration(seconds: float) -> str:
    """Render a duration with three significant digits in µs, ms or s.

    Args:
        seconds: The duration; may be ``nan``.

    Returns:
        E.g. ``"812 µs"``, ``"1.91 ms"``, ``"2.50 s"``; ``"n/a"`` for ``nan``.
    """
    if math.isnan(seconds):
        return "n/a"
    for scale, unit in ((1e6, "µs"), (1e3, "ms")):
        text = _three_digits(seconds * scale)
        # Test the rounded text, so 999.7 µs prints as "1.00 ms" and never as "1000 µs".
        if abs(float(text)) < 1000:
            return f"{text} {unit}"
    return f"{_three_digits(seconds)} s"


def _three_digits(x: float) -> str:
    """``x`` with three significant digits, fixed-point (``812``, ``1.91``, ``0.400``)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:.2f}"
    # Round to three significant digits first: 0.9997 must become 1.00, not 1.000.
    rounded = float(f"{x:.2e}")
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def default_warmup(n: int) -> int:
    """Warm-up calls used when none are given: 10 % of ``n``, at most 1000.

    Args:
        n: Measured calls.

    Returns:
        The number of warm-up calls.
    """
    return min(n // 10, 1000)


def _check_counts(n: int, warmup: int | None) -> int:
    """Validate ``n`` and resolve ``warmup``; returns the warm-up count."""
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    if warmup is None:
        return default_warmup(n)
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, not {warmup}")
    return warmup


async def _sequential_phase(call: Call, n: int) -> tuple[list[float], Counter[str], float]:
    """Run ``n`` calls back to back; return (latencies, error counts, elapsed)."""
    latencies: list[float] = []
    # Local aliases: attribute look-ups in the hot loop would be measured along with the call.
    append = latencies.append
    clock = time.perf_counter
    errors: Counter[str] = Counter()
    start = clock()
    for _ in range(n):
        sent = clock()
        try:
            await call()
        except Exception as exc:  # a failing call is data, not a reason to stop the run
            errors[type(exc).__name__] += 1
        else:
            append(clock() - sent)
    return latencies, errors, clock() - start


async def measure_sequential(
    call: Call, n: int, *, warmup: int | None = None, label: str = ""
) -> BenchResult:
    """Measure ``n`` calls made one at a time.

    This is the latency floor: no call ever waits behind another one of ours.

    Args:
        call: The call to measure (a zero-argument coroutine function).
        n: Measured calls, ``>= 1``.
        warmup: Calls made first and left out of the figures; ``None`` means
            :func:`default_warmup` of ``n``. Their errors are ignored.
        label: Copied into the result.

    Returns:
        A result with ``mode="sequential"`` and ``concurrency=1``.

    Raises:
        ValueError: If ``n < 1`` or ``warmup < 0``.
    """
    warmup = _check_counts(n, warmup)
    if warmup:
        await _sequential_phase(call, warmup)
    latencies, errors, elapsed = await _sequential_phase(call, n)
    return _result(label, "sequential", 1, None, latencies, elapsed, errors)


async def _closed_phase(
    call: Call, n: int, concurrency: int
) -> tuple[list[float], Counter[str], float]:
    """Run ``n`` calls from ``concurrency`` workers; return (latencies, errors, elapsed)."""
    latencies: list[float] = []
    append = latencies.append
    clock = time.perf_counter
    errors: Counter[str] = Counter()
    # Calls not yet started, shared by the workers. Taking one is a plain decrement: asyncio
    # runs one worker at a time and there is no await between the test and the decrement.
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            sent = clock()
            try:
                await call()
            except Exception as exc:  # counted, and this worker carries on
                errors[type(exc).__name__] += 1
            else:
                append(clock() - sent)

    start = clock()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, n)):
            group.create_task(worker())
    return latencies, errors, clock() - start


async def measure_closed_loop(
    call: Call, n: int, concurrency: int, *, warmup: int | None = None, label: str = ""
) -> BenchResult:
    """Measure ``n`` calls issued by ``concurrency`` workers in a closed loop.

    Each worker sends its next call the moment its previous one returns, so exactly
    ``concurrency`` calls are in flight (until fewer than that remain). This models a fixed
    population of impatient clients: throughput rises with ``concurrency`` until the server
    saturates, after which only latency grows (Little's law: in flight = throughput x latency).

    Note what a closed loop cannot show: when the server stalls, the workers stall with it and
    stop sending, so the calls that *would* have arrived meanwhile are never measured. Use
    :func:`measure_open_loop` to see queueing delay.

    Args:
        call: The call to measure (a zero-argument coroutine function).
        n: Measured calls in total across all workers, ``>= 1``.
        concurrency: Workers, i.e. calls in flight, ``>= 1``.
        warmup: Calls made first with the same concurrency and left out of the figures;
            ``None`` means :func:`default_warmup` of ``n``. Their errors are ignored. The
            measured phase starts after every warm-up call has returned.
        label: Copied into the result.

    Returns:
        A result with ``mode="closed"``.

    Raises:
        ValueError: If ``n < 1``, ``concurrency < 1`` or ``warmup < 0``.
    """
    warmup = _check_counts(n, warmup)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    if warmup:
        await _closed_phase(call, warmup, concurrency)
    latencies, errors, elapsed = await _closed_phase(call, n, concurrency)
    return _result(label, "closed", concurrency, None, latencies, elapsed, errors)


async def _open_phase(
    call: Call, rate: float, n: int, max_outstanding: int
) -> tuple[list[float], Counter[str], float]:
    """Offer ``n`` calls at ``rate``/s; return (latencies from due time, errors, elapsed)."""
    latencies: list[float] = []
    append = latencies.append
    clock = time.perf_counter
    errors: Counter[str] = Counter()
    outstanding = 0

    async def one(due: float) -> None:
        nonlocal outstanding
        try:
            await call()
        except Exception as exc:  # counted; the schedule does not care
            errors[type(exc).__name__] += 1
        else:
            # From when the call was *due*, not when it went out: see measure_open_loop.
            append(clock() - due)
        finally:
            outstanding -= 1

    # The TaskGroup keeps a strong reference to every call task (the event loop only keeps
    # weak ones) and waits for the last of them before the phase ends.
    async with asyncio.TaskGroup() as group:
        start = clock()
        issued = 0
        while issued < n:
            due = start + issued / rate
            wait = due - clock()
            if wait > 0:
                # Why not simply sleep(wait): the event loop's timers are only as fine as
                # epoll, 1 ms, and every call sent late is charged that lateness. So sleep only
                # until _SPIN_WINDOW before the due time, then yield to the loop (sleep(0)) until
                # it arrives. This spends CPU, but other tasks still run on every pass.
                await asyncio.sleep(wait - _SPIN_WINDOW if wait > _SPIN_WINDOW else 0)
                continue
            # Due (or overdue: a scheduler that fell behind sends at once to catch up, rather
            # than quietly shifting the whole schedule later).
            if outstanding >= max_outstanding:
                # Calls that have already finished may need one loop pass to say so.
                await asyncio.sleep(0)
            if outstanding >= max_outstanding:
                errors[OUTSTANDING_LIMIT_ERROR] += 1
            else:
                outstanding += 1
                group.create_task(one(due))
            issued += 1
    return latencies, errors, clock() - start


async def measure_open_loop(
    call: Call,
    rate: float,
    n: int,
    *,
    warmup: int | None = None,
    label: str = "",
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
) -> BenchResult:
    """Offer ``n`` calls at a fixed rate and measure each from the moment it was due.

    **Why an open loop.** Real clients do not wait for each other: a thousand users each
    clicking once a second send a thousand calls per second whether or not the server is keeping
    up. The closed loop of :func:`measure_closed_loop` does wait: when the server stalls for
    100 ms, its workers stall too, send nothing, and the benchmark records *one* slow call. The
    hundred users who clicked during that stall, and who each waited up to 100 ms, never appear.
    Gil Tene named this *coordinated omission*: the load generator coordinates with the system
    under test and omits exactly the measurements that would have been bad.

    **How this function avoids it.** Call ``i`` is *due* at ``t0 + i / rate``. The scheduler
    sends it at (or, if the loop was busy, as soon as possible after) that instant, without
    waiting for earlier calls to return, and its latency is counted from the due time, not from
    when it was actually sent. If the server needs 5 ms per call and calls are offered every
    1 ms, a queue builds and the recorded latencies climb 5, 9, 13, ... ms: exactly what the
    users would see. Any lag of the scheduler itself is also charged to the latency: the
    conservative choice, since a late harness may then over-report but can never hide a delay.

    **Bounded.** A server slower than the offered rate makes outstanding calls pile up without
    limit. At most ``max_outstanding`` calls are in flight; a call that falls due beyond that
    is not sent and is counted as an error of type :data:`OUTSTANDING_LIMIT_ERROR` (as a client
    with a bounded queue would refuse it), so the run ends and memory stays bounded.

    Throughput is successful calls divided by the time from the first due call to the last
    completion, so it approaches ``rate`` when the server keeps up and the server's capacity
    when it does not.

    **Costs.** To send calls on time despite the event loop's 1 ms timer granularity, the
    scheduler yields to the loop in a busy cycle during the last 2 ms before each due time, so
    expect one core to be busy for the whole run. Each offered call costs the harness one task,
    about 10 µs of CPython time: around 100k calls/s offered, the harness itself starts to be
    late, and (by design) that lateness shows up as latency. Offer less, or measure the
    harness alone with a no-op ``call``, before blaming the server.

    Args:
        call: The call to measure (a zero-argument coroutine function).
        rate: Offered calls per second, ``> 0``.
        n: Measured calls offered, ``>= 1``; each either succeeds, fails or is refused.
        warmup: Calls offered first at the same rate and left out of the figures; ``None`` means
            :func:`default_warmup` of ``n``. Their errors are ignored.
        label: Copied into the result.
        max_outstanding: Cap on calls in flight, ``>= 1``; reported as the result's
            ``concurrency``.

    Returns:
        A result with ``mode="open"`` and ``offered_rate=rate``.

    Raises:
        ValueError: If ``rate`` is not a positive finite number, ``n < 1``, ``warmup < 0`` or
            ``max_outstanding < 1``.
    """
    warmup = _check_counts(n, warmup)
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive finite number, not {rate}")
    if max_outstanding < 1:
        raise ValueError(f"max_outstanding must be >= 1, not {max_outstanding}")
    if warmup:
        await _open_phase(call, rate, warmup, max_outstanding)
    latencies, errors, elapsed = await _open_phase(call, rate, n, max_outstanding)
    return _result(label, "open", max_outstanding, float(rate), latencies, elapsed, errors)


async def measure_concurrency_sweep(
    call: Call,
    n: int,
    levels: Sequence[int] = (1, 4, 16, 64),
    *,
    warmup: int | None = None,
    label: str = "",
) -> dict[int, BenchResult]:
    """Measure the closed loop at several levels of calls in flight, one after the other.

    Level 1 uses :func:`measure_sequential` (a closed loop of one worker, without the task).

    Args:
        call: The call to measure (a zero-argument coroutine function).
        n: Measured calls per level, ``>= 1``.
        levels: Concurrency levels, each ``>= 1``, no repeats; measured in the given order.
        warmup: Warm-up calls per level (see :func:`measure_closed_loop`).
        label: Copied into every result (the curve's name in the plots).

    Returns:
        Level -> result, in the order of ``levels``.

    Raises:
        ValueError: If ``levels`` is empty, has repeats or a level below 1, or as the
            measuring functions do.
    """
    if not levels:
        raise ValueError("levels must not be empty")
    if len(set(levels)) != len(levels):
        raise ValueError(f"levels must not repeat: {list(levels)}")
    if min(levels) < 1:
        raise ValueError(f"every level must be >= 1: {list(levels)}")
    results: dict[int, BenchResult] = {}
    for level in levels:
        if level == 1:
            results[level] = await measure_sequential(call, n, warmup=warmup, label=label)
        else:
            results[level] = await measure_closed_loop(
                call, n, level, warmup=warmup, label=label
            )
    return results


def _result(
    label: str,
    mode: Mode,
    concurrency: int,
    offered_rate: float | None,
    latencies: list[float],
    elapsed: float,
    errors: Counter[str],
) -> BenchResult:
    """Package a phase's raw figures."""
    return BenchResult(
        label=label,
        mode=mode,
        concurrency=concurrency,
        offered_rate=offered_rate,
        latencies=tuple(latencies),
        elapsed=elapsed,
        errors=sum(errors.values()),
        error_types=dict(errors),
    )


# --------------------------------------------------------------------------------------------
# Run length and repeated runs
# --------------------------------------------------------------------------------------------


def run_length(short: int, full: int, *, environ: Mapping[str, str] | None = None) -> int:
    """Pick a run length from the environment.

    ``RPC_BENCH=full`` asks for the long run (the figures quoted in the docs). ``RPC_BENCH=short``,
    or ``CI`` being set, or nothing at all, gives the short run: notebooks and CI must stay fast.
    An explicit ``RPC_BENCH`` wins over ``CI``, so a nightly CI job can ask for ``full``.

    Args:
        short: Calls for the short run.
        full: Calls for the long run.
        environ: The environment to read; ``None`` means :data:`os.environ` (tests pass a dict
            instead of patching the process environment).

    Returns:
        ``short`` or ``full``.

    Raises:
        ValueError: If ``RPC_BENCH`` is set to anything but ``short`` or ``full`` (a typo should
            not silently run the wrong length).
    """
    env = os.environ if environ is None else environ
    choice = env.get("RPC_BENCH", "").strip().lower()
    if choice == "full":
        return full
    if choice in ("", "short"):
        # CI forces short too; since short is also the default there is nothing more to do.
        return short
    raise ValueError(f"RPC_BENCH must be 'short' or 'full', not {env['RPC_BENCH']!r}")


def median_of(results: Sequence[BenchResult]) -> dict[str, Any]:
    """Summarise several runs of one configuration by their medians.

    One run is one sample of a noisy machine; quote the median of several.

    Args:
        results: Runs with the same label, mode, concurrency and offered rate.

    Returns:
        ``label``, ``mode``, ``concurrency``, ``offered_rate``, ``runs``, ``calls`` and
        ``errors`` (totals), and the medians ``tps``, ``p50_us``, ``p90_us``, ``p99_us``,
        ``max_us``. A latency median ignores runs where nothing succeeded and is ``None`` if
        no run had a success.

    Raises:
        ValueError: If ``results`` is empty or mixes configurations.
    """
    if not results:
        raise ValueError("median_of needs at least one result")
    configs = {(r.label, r.mode, r.concurrency, r.offered_rate) for r in results}
    if len(configs) != 1:
        raise ValueError(f"median_of mixes configurations: {sorted(configs, key=str)}")
    summaries = [r.summary() for r in results]
    first = summaries[0]
    row: dict[str, Any] = {
        "label": first["label"],
        "mode": first["mode"],
        "concurrency": first["concurrency"],
        "offered_rate": first["offered_rate"],
        "runs": len(results),
        "calls": sum(s["calls"] for s in summaries),
        "errors": sum(s["errors"] for s in summaries),
    }
    for key in ("tps", "p50_us", "p90_us", "p99_us", "max_us"):
        values = [s[key] for s in summaries if s[key] is not None]
        row[key] = statistics.median(values) if values else None
    return row


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def save_results(
    path: str | os.PathLike[str],
    results: Iterable[BenchResult],
    *,
    include_latencies: bool = False,
) -> None:
    """Write results as JSON so stages can be compared later.

    The file is ``{"format": RESULTS_FORMAT, "version": 1, "results": [record, ...]}`` where each
    record is :meth:`BenchResult.to_record`. It is written to a temporary file and renamed, so a
    crash never leaves half a file behind.

    Args:
        path: Destination file; replaced if it exists.
        results: The results to save.
        include_latencies: Also store raw latencies, which lets :meth:`BenchResult.from_record`
            rebuild the results (and plots redraw their CDFs) at the cost of a larger file.
    """
    document = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "results": [r.to_record(include_latencies=include_latencies) for r in results],
    }
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, allow_nan=False)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def load_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a file written by :func:`save_results`.

    Args:
        path: The file.

    Returns:
        The records, each a :meth:`BenchResult.summary` dict plus ``elapsed``, ``error_types``
        and, if saved, ``latencies``. Pass one to :meth:`BenchResult.from_record` to get a
        :class:`BenchResult` back.

    Raises:
        ValueError: If the file is not a results file of a known version.
        OSError: If it cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a {RESULTS_FORMAT} file")
    if document.get("version") != RESULTS_VERSION:
        raise ValueError(f"unsupported results version {document.get('version')!r}")
    records = document["results"]
    if not isinstance(records, list):
        raise ValueError("'results' must be a list")
    return records
