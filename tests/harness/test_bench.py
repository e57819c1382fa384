"""Tests for ``stages.harness.bench``: the measuring loops and what they report.

Fake calls are built on ``asyncio.sleep`` with known delays. Assertions about time use bounds
that causality guarantees (``asyncio.sleep`` never returns early, a serial server cannot finish
call ``k`` before ``k + 1`` service times have passed), never "it should be about this fast".
"""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.harness.bench import (
    OUTSTANDING_LIMIT_ERROR,
    BenchResult,
    default_warmup,
    format_duration,
    load_results,
    measure_closed_loop,
    measure_concurrency_sweep,
    measure_open_loop,
    measure_sequential,
    median_of,
    run_length,
    save_results,
)

MS = 1e-3

Call = Callable[[], Awaitable[object]]


def make(latencies: tuple[float, ...] = (0.001, 0.002, 0.003), **overrides: Any) -> BenchResult:
    """A hand-built result for the pure (non-async) tests."""
    fields: dict[str, Any] = {
        "label": "t",
        "mode": "closed",
        "concurrency": 4,
        "offered_rate": None,
        "latencies": latencies,
        "elapsed": 1.0,
        "errors": 0,
        "error_types": {},
    }
    fields.update(overrides)
    return BenchResult(**fields)


@dataclass
class FakeCall:
    """A call that sleeps ``delay`` and records how it was driven.

    ``fail_first`` invocations raise ``WarmupFailure`` (to tell warm-up calls apart), and
    ``raises`` maps "every k-th invocation" to the exception raised then.
    """

    delay: float = 0.0
    fail_first: int = 0
    raises: dict[int, type[Exception]] = field(default_factory=dict)
    invocations: int = 0
    in_flight: int = 0
    peak: int = 0

    async def __call__(self) -> None:
        self.invocations += 1
        number = self.invocations
        if number <= self.fail_first:
            raise WarmupFailure(number)
        for every, exc_type in self.raises.items():
            if number % every == 0:
                raise exc_type(number)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1


class WarmupFailure(Exception):
    """Raised by FakeCall during what should be the warm-up."""


@dataclass
class SerialServer:
    """A single-server FIFO queue: each call occupies the server for ``service`` seconds.

    Call ``i`` (in arrival order) cannot finish before ``(i + 1) * service`` after the first
    arrival, whoever is measuring: that is the queueing an honest benchmark must report.
    """

    service: float
    free_at: float = 0.0

    async def __call__(self) -> None:
        now = time.perf_counter()
        finish = max(now, self.free_at) + self.service
        self.free_at = finish
        await asyncio.sleep(finish - now)


def ordered(result: BenchResult) -> bool:
    """Whether the reported statistics are in the order they must be."""
    return result.min <= result.p50 <= result.p90 <= result.p99 <= result.max


MEASURERS: dict[str, Callable[..., Coroutine[Any, Any, BenchResult]]] = {
    "sequential": lambda call, n, **kw: measure_sequential(call, n, **kw),
    "closed": lambda call, n, **kw: measure_closed_loop(call, n, 4, **kw),
    "open": lambda call, n, **kw: measure_open_loop(call, 5000.0, n, **kw),
}


# ---------------------------------------------------------------------------------------------
# The three loops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MEASURERS))
def test_counts_exactly_n_and_orders_percentiles(mode: str) -> None:
    fake = FakeCall(delay=1 * MS)
    result = asyncio.run(MEASURERS[mode](fake, 25, warmup=0, label="fake"))
    assert result.mode == mode
    assert result.label == "fake"
    assert result.calls == 25 == len(result.latencies)
    assert fake.invocations == 25
    assert result.errors == 0 and dict(result.error_types) == {}
    assert ordered(result)
    # asyncio.sleep never returns early, so no latency can undercut the delay.
    assert result.min >= 1 * MS * 0.99
    assert result.elapsed > 0 and result.tps > 0


@pytest.mark.parametrize("mode", sorted(MEASURERS))
def test_warmup_calls_are_excluded(mode: str) -> None:
    # Every warm-up call fails, every measured call succeeds: any error in the result would
    # be a warm-up call leaking into the figures.
    fake = FakeCall(fail_first=7)
    result = asyncio.run(MEASURERS[mode](fake, 20, warmup=7))
    assert fake.invocations == 27
    assert result.calls == 20
    assert result.errors == 0


@pytest.mark.parametrize("mode", sorted(MEASURERS))
def test_errors_are_counted_by_type_and_do_not_stop_the_run(mode: str) -> None:
    # Invocations 3, 6, ..., 30 raise ValueError (10); 5, 10, 20, 25 raise KeyError (4):
    # 15 is a multiple of 3 first.
    fake = FakeCall(raises={3: ValueError, 5: KeyError})
    result = asyncio.run(MEASURERS[mode](fake, 30, warmup=0))
    assert result.calls == 30
    assert result.errors == 14
    assert dict(result.error_types) == {"KeyError": 4, "ValueError": 10}
    assert len(result.latencies) == 16
    assert result.tps == pytest.approx(16 / result.elapsed)


def test_cancellation_is_not_counted_as_an_error() -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(measure_sequential(cancelled, 3, warmup=0))


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_closed_loop_keeps_exactly_c_calls_in_flight(concurrency: int) -> None:
    fake = FakeCall(delay=1 * MS)
    result = asyncio.run(measure_closed_loop(fake, 8 * concurrency, concurrency, warmup=0))
    assert fake.peak == concurrency
    assert result.concurrency == concurrency
    assert result.calls == 8 * concurrency


def test_closed_loop_with_fewer_calls_than_workers() -> None:
    fake = FakeCall(delay=1 * MS)
    result = asyncio.run(measure_closed_loop(fake, 3, 16, warmup=0))
    assert result.calls == 3 and fake.peak == 3


def test_open_loop_charges_queueing_to_latency() -> None:
    # The server needs 5 ms per call; calls are offered every 1 ms. Call i is due at i ms and
    # cannot finish before (i + 1) * 5 ms, so its latency is at least 4 i + 5 ms.
    n = 30
    result = asyncio.run(measure_open_loop(SerialServer(5 * MS), 1000.0, n, warmup=0))
    assert result.calls == n and result.errors == 0
    assert result.offered_rate == 1000.0
    slack = 0.5 * MS  # clock reads around the due time; far below the 4 ms step
    for i, latency in enumerate(result.latencies):
        assert latency >= (4 * i + 5) * MS - slack, i
    assert sum(result.latencies[-5:]) > sum(result.latencies[:5])
    # The server completes at most one call per 5 ms, whatever was offered.
    assert result.tps <= 1 / (5 * MS)

    # The closed loop on the same server sees none of that queue: coordinated omission.
    closed = asyncio.run(measure_closed_loop(SerialServer(5 * MS), n, 1, warmup=0))
    assert closed.p50 < result.p50


def test_open_loop_never_exceeds_the_offered_rate() -> None:
    n, rate = 100, 2000.0
    result = asyncio.run(measure_open_loop(FakeCall(), rate, n, warmup=0))
    assert result.calls == n and result.errors == 0
    # The last call is not due before (n - 1) / rate, so the phase lasts at least that long.
    assert result.elapsed >= (n - 1) / rate
    assert all(latency >= 0 for latency in result.latencies)
    assert ordered(result)


def test_open_loop_refuses_calls_beyond_max_outstanding() -> None:
    # Twenty calls due within 2 ms, each holding the line for 50 ms: only five fit.
    fake = FakeCall(delay=50 * MS)
    result = asyncio.run(measure_open_loop(fake, 10_000.0, 20, warmup=0, max_outstanding=5))
    assert fake.invocations == 5
    assert result.calls == 20
    assert result.errors == 15
    assert dict(result.error_types) == {OUTSTANDING_LIMIT_ERROR: 15}
    assert len(result.latencies) == 5
    assert result.concurrency == 5


def test_concurrency_sweep() -> None:
    fake = FakeCall(delay=0.2 * MS)
    curve = asyncio.run(measure_concurrency_sweep(fake, 16, (1, 2, 8), warmup=2, label="s"))
    assert list(curve) == [1, 2, 8]
    assert curve[1].mode == "sequential"
    assert [curve[c].mode for c in (2, 8)] == ["closed", "closed"]
    assert all(r.concurrency == c and r.calls == 16 and r.label == "s" for c, r in curve.items())
    assert fake.invocations == 3 * (16 + 2)
    assert fake.peak == 8


@pytest.mark.parametrize("levels", [(), (1, 1), (0, 4)])
def test_concurrency_sweep_rejects_bad_levels(levels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        asyncio.run(measure_concurrency_sweep(FakeCall(), 4, levels))


@pytest.mark.parametrize(
    "run",
    [
        lambda c: measure_sequential(c, 0),
        lambda c: measure_sequential(c, 5, warmup=-1),
        lambda c: measure_closed_loop(c, 5, 0),
        lambda c: measure_open_loop(c, 0.0, 5),
        lambda c: measure_open_loop(c, math.inf, 5),
        lambda c: measure_open_loop(c, 10.0, 5, max_outstanding=0),
    ],
)
def test_bad_arguments_are_refused(
    run: Callable[[Call], Coroutine[Any, Any, BenchResult]],
) -> None:
    fake = FakeCall()
    with pytest.raises(ValueError):
        asyncio.run(run(fake))
    assert fake.invocations == 0


def test_default_warmup() -> None:
    assert default_warmup(5) == 0
    assert default_warmup(500) == 50
    assert default_warmup(1_000_000) == 1000


def test_harness_overhead_is_small() -> None:
    """Not a benchmark of anything: a sanity bound on the harness's own cost per call."""

    async def noop() -> None:
        pass

    async def run() -> list[BenchResult]:
        return [
            await measure_sequential(noop, 20_000, warmup=0),
            await measure_closed_loop(noop, 20_000, 16, warmup=0),
            await measure_open_loop(noop, 50_000.0, 5_000, warmup=0),
        ]

    started = time.perf_counter()
    results = asyncio.run(run())
    assert time.perf_counter() - started < 2.0
    assert [r.calls for r in results] == [20_000, 20_000, 5_000]
    assert all(r.errors == 0 for r in results)


# ---------------------------------------------------------------------------------------------
# BenchResult
# ---------------------------------------------------------------------------------------------


@given(
    latencies=st.lists(
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=200,
    ),
    q1=st.floats(min_value=0.0, max_value=100.0),
    q2=st.floats(min_value=0.0, max_value=100.0),
)
def test_percentile_is_monotone_and_within_range(
    latencies: list[float], q1: float, q2: float
) -> None:
    result = make(tuple(latencies))
    lo, hi = sorted((q1, q2))
    assert result.percentile(lo) <= result.percentile(hi)
    assert min(latencies) <= result.percentile(q1) <= max(latencies)
    assert result.percentile(0) == min(latencies)
    assert result.percentile(100) == max(latencies)
    # Documented as numpy's default ("linear") method.
    assert result.percentile(q1) == pytest.approx(
        float(np.percentile(latencies, q1)), rel=1e-9, abs=1e-12
    )


def test_percentile_refuses_out_of_range_q() -> None:
    result = make()
    for q in (-0.1, 100.1, math.nan):
        with pytest.raises(ValueError):
            result.percentile(q)


def test_statistics_of_a_known_sample() -> None:
    result = make(tuple(i * MS for i in range(1, 101)), elapsed=2.0, errors=1,
                  error_types={"OSError": 1})
    assert result.calls == 101 and result.successes == 100
    assert result.tps == pytest.approx(50.0)
    assert result.p50 == pytest.approx(50.5 * MS)
    assert result.p99 == pytest.approx(99.01 * MS)
    assert result.max == pytest.approx(100 * MS)
    assert result.mean == pytest.approx(50.5 * MS)


def test_no_success_gives_nan_statistics_and_null_summary() -> None:
    result = make((), errors=3, error_types={"OSError": 3})
    assert result.calls == 3 and result.tps == 0.0
    assert all(math.isnan(x) for x in (result.p50, result.p99, result.max, result.mean))
    summary = result.summary()
    assert summary["p50_us"] is None and summary["max_us"] is None
    json.dumps(summary, allow_nan=False)
    assert "n/a" in str(result)


def test_summary_is_json_friendly_in_microseconds() -> None:
    summary = make((0.001, 0.002)).summary()
    assert set(summary) >= {"label", "mode", "concurrency", "calls", "errors", "tps",
                            "p50_us", "p90_us", "p99_us", "max_us"}
    assert summary["p50_us"] == pytest.approx(1500.0)
    assert summary["max_us"] == pytest.approx(2000.0)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_str_is_one_line_with_units() -> None:
    text = str(make((0.0001, 0.0001, 0.0021), label="echo"))
    assert "\n" not in text
    assert text.startswith("echo [closed C=4]")
    assert "µs" in text and "ms" in text
    open_text = str(make(mode="open", offered_rate=1000.0, concurrency=10))
    assert "open 1,000/s" in open_text


@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "burst"},
        {"concurrency": 0},
        {"elapsed": -1.0},
        {"errors": -1, "error_types": {}},
        {"errors": 2, "error_types": {"OSError": 1}},
        {"offered_rate": 0.0},
    ],
)
def test_bench_result_validates(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(**overrides)


def test_bench_result_is_frozen_hashable_and_picklable() -> None:
    result = make(errors=1, error_types={"OSError": 1})
    with pytest.raises(AttributeError):
        result.label = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.error_types["OSError"] = 2  # type: ignore[index]
    assert hash(result) == hash(make(errors=1, error_types={"OSError": 1}))
    assert pickle.loads(pickle.dumps(result)) == result


def test_format_duration() -> None:
    assert format_duration(812e-6) == "812 µs"
    assert format_duration(0.4e-6) == "0.400 µs"
    assert format_duration(999.7e-6) == "1.00 ms"
    assert format_duration(0.00191) == "1.91 ms"
    assert format_duration(2.5) == "2.50 s"
    assert format_duration(1234.5) == "1230 s"
    assert format_duration(math.nan) == "n/a"


# ---------------------------------------------------------------------------------------------
# Run length, medians, files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, 10),
        ({"CI": "true"}, 10),
        ({"RPC_BENCH": "short"}, 10),
        ({"RPC_BENCH": "full"}, 1000),
        ({"RPC_BENCH": "FULL", "CI": "1"}, 1000),
    ],
)
def test_run_length(environ: dict[str, str], expected: int) -> None:
    assert run_length(10, 1000, environ=environ) == expected


def test_run_length_refuses_typos() -> None:
    with pytest.raises(ValueError):
        run_length(10, 1000, environ={"RPC_BENCH": "ful"})


def test_median_of_runs() -> None:
    runs = [
        make((0.001, 0.001), elapsed=1.0),
        make((0.003, 0.003), elapsed=0.5),
        make((0.002, 0.002), elapsed=0.25, errors=1, error_types={"OSError": 1}),
    ]
    row = median_of(runs)
    assert row["runs"] == 3 and row["calls"] == 7 and row["errors"] == 1
    assert row["tps"] == pytest.approx(4.0)
    assert row["p50_us"] == pytest.approx(2000.0)
    assert row["p99_us"] == pytest.approx(2000.0)


def test_median_of_refuses_empty_or_mixed() -> None:
    with pytest.raises(ValueError):
        median_of([])
    with pytest.raises(ValueError):
        median_of([make(), make(concurrency=8)])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    results = [make(label="a"), make((), label="b", errors=2, error_types={"OSError": 2})]
    path = tmp_path / "results.json"
    save_results(path, results, include_latencies=True)
    records = load_results(path)
    assert [r["label"] for r in records] == ["a", "b"]
    assert [BenchResult.from_record(r) for r in records] == results
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_summaries_only(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_results(path, [make()])
    (record,) = load_results(path)
    assert record["p50_us"] == pytest.approx(2000.0)
    with pytest.raises(ValueError):
        BenchResult.from_record(record)


def test_load_refuses_foreign_json(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"results": []}), encoding="utf-8")
    with pytest.raises(ValueError):
        load_results(path)
