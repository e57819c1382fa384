"""Measuring one cell (a system, a workload, a level of calls in flight), once.

Every cell is measured the same way: warm-up calls first (left out), then the CPU time used so
far by the client (this process, all its threads) and by the server (its process, from
``/proc``) is read, the measured calls run, and the CPU time is read again. The figures are the
harness's (:class:`~stages.harness.bench.BenchResult`: throughput, percentiles) plus CPU
microseconds per call on each side.

Async calls are driven by the harness itself (:func:`~stages.harness.bench.measure_sequential`
for one call at a time, :func:`~stages.harness.bench.measure_closed_loop` for ``N`` in
flight). Blocking calls are driven by :func:`measure_threads`, the same closed loop with
``N`` threads in place of ``N`` tasks.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from stages.harness.bench import BenchResult, measure_closed_loop, measure_sequential
from stages.harness.process import cpu_seconds

__all__ = ["CellRun", "WrongAnswer", "measure_async", "measure_threads"]

BARRIER_TIMEOUT = 600.0
"""Seconds a thread waits for the others between phases before the cell is given up."""


class WrongAnswer(Exception):
    """A system answered a call with something else than the workload asks for."""


@dataclass(frozen=True)
class CellRun:
    """One measurement of one cell.

    Attributes:
        result: calls, errors, throughput and latencies of the measured calls.
        client_cpu: CPU seconds of the measuring process during the measured calls.
        server_cpu: CPU seconds of the server process during the measured calls.
    """

    result: BenchResult
    client_cpu: float
    server_cpu: float

    def record(self) -> dict[str, Any]:
        """The figures of results.json: calls, errors, TPS, p50/p99 and CPU µs per call."""
        summary = self.result.summary()
        calls = max(self.result.calls, 1)
        client_us = self.client_cpu / calls * 1e6
        server_us = self.server_cpu / calls * 1e6
        return {
            "calls": summary["calls"],
            "errors": summary["errors"],
            "error_types": dict(self.result.error_types),
            "tps": summary["tps"],
            "p50_us": summary["p50_us"],
            "p99_us": summary["p99_us"],
            "client_cpu_us": round(client_us, 2),
            "server_cpu_us": round(server_us, 2),
            "cpu_us": round(client_us + server_us, 2),
        }


def _cpu(server_pid: int) -> tuple[float, float]:
    """(client, server) CPU seconds so far; the client is this process, every thread of it."""
    return cpu_seconds(), cpu_seconds(server_pid)


async def _phase(call: Callable[[], Awaitable[object]], calls: int, level: int,
                 label: str) -> BenchResult:
    if level == 1:
        return await measure_sequential(call, calls, warmup=0, label=label)
    return await measure_closed_loop(call, calls, level, warmup=0, label=label)


async def measure_async(call: Callable[[], Awaitable[object]], *, calls: int, level: int,
                        warmup: int, server_pid: int, label: str = "") -> CellRun:
    """Measure an async call with ``level`` calls in flight (tasks on this event loop).

    Args:
        call: the call (a zero-argument coroutine function).
        calls: measured calls.
        level: calls in flight; 1 is one call at a time.
        warmup: calls made first, with the same calls in flight, and left out.
        server_pid: the server's process, whose CPU time is read.
    """
    if warmup:
        await _phase(call, warmup, level, label)
    client0, server0 = _cpu(server_pid)
    result = await _phase(call, calls, level, label)
    client1, server1 = _cpu(server_pid)
    return CellRun(result, client1 - client0, server1 - server0)


def measure_threads(open_caller: Callable[[], tuple[Callable[[], object], Callable[[], None]]],
                    check: Callable[[object], bool], *, calls: int, level: int, warmup: int,
                    server_pid: int, label: str = "") -> CellRun:
    """Measure a blocking call with ``level`` threads, each making one call after the other.

    Each thread opens its caller (``open_caller() -> (call, close)``, run in the thread: a
    Pyro5 proxy must be made by the thread that uses it), checks one answer, makes its share
    of the warm-up calls, and waits for the others; then the CPU clocks are read, every thread
    is let go at once, and each takes the next of the ``calls`` measured calls until none is
    left. Connections are opened and closed outside the measured phase.

    Raises:
        WrongAnswer: a thread's first answer failed ``check``.
        Exception: whatever opening a caller raised, in any thread.
    """
    barrier = threading.Barrier(level + 1, timeout=BARRIER_TIMEOUT)
    warmup_tickets, tickets = itertools.count(), itertools.count()
    latencies: list[list[float]] = [[] for _ in range(level)]
    errors: list[Counter[str]] = [Counter() for _ in range(level)]
    failures: list[BaseException] = []
    clock = time.perf_counter

    def worker(index: int) -> None:
        # The phases are separated by the barrier; a thread that fails breaks it (abort), so
        # no thread, nor the main one, waits for it for ever.
        try:
            call, close = open_caller()
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
            return
        try:
            if not check(call()):
                raise WrongAnswer(f"{label}: the first answer is not the expected one")
            while next(warmup_tickets) < warmup:
                try:
                    call()
                except Exception:  # warm-up errors are ignored, as the harness does
                    continue
            barrier.wait()  # warmed up
            barrier.wait()  # the clocks are read: go
            mine, counted = latencies[index], errors[index]
            append = mine.append
            while next(tickets) < calls:
                sent = clock()
                try:
                    call()
                except Exception as exc:  # counted; the thread carries on, as the harness does
                    counted[type(exc).__name__] += 1
                else:
                    append(clock() - sent)
            barrier.wait()  # done
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}", daemon=True)
               for i in range(level)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()  # every thread warmed up
        client0, server0 = _cpu(server_pid)
        start = clock()
        barrier.wait()  # go
        barrier.wait()  # every measured call returned
        elapsed = clock() - start
        client1, server1 = _cpu(server_pid)
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join(BARRIER_TIMEOUT)
        raise (failures[0] if failures else TimeoutError(f"{label}: a thread hung")) from None
    for thread in threads:
        thread.join(BARRIER_TIMEOUT)
    total_errors: Counter[str] = sum(errors, Counter())
    result = BenchResult(label=label, mode="sequential" if level == 1 else "closed",
                         concurrency=level, offered_rate=None,
                         latencies=tuple(itertools.chain.from_iterable(latencies)),
                         elapsed=elapsed, errors=sum(total_errors.values()),
                         error_types=dict(total_errors))
    return CellRun(result, client1 - client0, server1 - server0)
