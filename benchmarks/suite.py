"""The loop over the matrix, and the document it produces (``benchmarks/results.json``).

::

    for each repetition:
        for each system, in an order rotated per repetition:
            start its server (a process of its own, on a free 127.0.0.1 port)
            open its client
            for each workload and level of calls in flight:
                check one answer, warm up, measure (calls, latencies, CPU on both sides)
            close the client, stop the server

Why interleave: on a shared machine a slow minute falls on whatever runs then. Running the whole
matrix several times, each time in another order, spreads such minutes over every system, and
the median of the repetitions (with their min–max spread beside it) is what the report quotes.

Why ratios per repetition: a system's ratio to the echo (or to ``grpc.aio``) is taken between
the two cells of the *same* repetition, then the median of those ratios is reported. The ratio
of CPU time per call (client + server) is steadier than the throughput ratio: a busy neighbour
makes both systems wait, not compute.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from benchmarks.clients import Target, looks_right
from benchmarks.measure import CellRun, WrongAnswer, measure_async, measure_threads
from benchmarks.servers import new_loop_factory
from benchmarks.systems import ECHO, GRPC_AIO, System
from benchmarks.workloads import Workload, calls_for, skip_reason, warmup_for
from stages.harness.bench import run_length
from stages.harness.process import ServerProcess
from stages.harness.zookeeper import resolve_zookeeper, temporary_chroot

__all__ = ["FORMAT", "REFERENCES", "Plan", "Results", "build_document", "run_suite"]

FORMAT: Final = "rpc-walkthrough/benchmark-suite"
VERSION: Final = 1

REFERENCES: Final = (("echo", ECHO), ("grpc_aio", GRPC_AIO))
"""The systems every ratio is taken to, with the suffix of their ratio keys."""

FIGURES: Final = ("tps", "p50_us", "p99_us", "client_cpu_us", "server_cpu_us", "cpu_us")
"""The figures of one run that are summarised over repetitions (median and min–max)."""

CELL_TIMEOUT: Final = 600.0
"""Seconds one async cell may take before it is counted as failed."""

FIRST_CALL_TIMEOUT: Final = 15.0
"""Seconds an async client may take to connect, and to answer the first call of a cell.
A system that does not even manage its first call is broken, not slow: it is not tried again
in later repetitions (a hung connection would otherwise cost minutes of every repetition)."""

Key = tuple[str, str, int]
"""A cell: (system id, workload name, calls in flight)."""

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """What to run.

    Attributes:
        systems, workloads, levels: the matrix.
        repetitions: how many times the whole matrix runs, interleaved.
        calls: measured calls of every cell instead of the run length's (for a quick slice).
    """

    systems: tuple[System, ...]
    workloads: tuple[Workload, ...]
    levels: tuple[int, ...]
    repetitions: int
    calls: int | None = None

    def cells(self, system: System) -> list[tuple[Workload, int]]:
        """The cells of ``system`` that are measured (not skipped), in order."""
        return [(w, level) for w in self.workloads for level in self.levels
                if skip_reason(w, level, threads=system.threads) is None]

    def order(self, systems: Sequence[System], repetition: int) -> list[System]:
        """``systems`` rotated by a share of the list per repetition, so that each repetition
        starts at another place (with 3 repetitions: at the start, a third in, two thirds)."""
        if not systems:
            return []
        shift = repetition * len(systems) // self.repetitions % len(systems)
        return [*systems[shift:], *systems[:shift]]


@dataclass
class Results:
    """What the repetitions measured: per cell, one record per repetition, and the failures."""

    runs: dict[Key, dict[int, dict[str, Any]]] = field(default_factory=dict)
    failures: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    """System id -> why it could not run at all (not tried in later repetitions)."""

    def add(self, key: Key, repetition: int, record: dict[str, Any]) -> None:
        self.runs.setdefault(key, {})[repetition] = record

    def fail(self, key: Key, repetition: int, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures.setdefault(key, []).append({"rep": repetition, "error": text[:500]})


# -- running ---------------------------------------------------------------------------------


def run_suite(plan: Plan, *, log: Log = _stderr) -> dict[str, Any]:
    """Run the plan; returns the results document (see :func:`build_document`).

    ZooKeeper (for v3.x) is the one given by ``$RPC_ZK``, or a local one started for the run;
    each v3.x server and its consumer get a fresh chroot in it. Systems whose modules are
    missing, or that need a ZooKeeper that cannot start, are reported as not run.

    Raises:
        RuntimeError: called where an event loop runs (a notebook's cell): the suite runs event
            loops of its own, one per system; call it from a thread (``asyncio.to_thread``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_suite runs event loops of its own and cannot run inside one: "
                           "call it from a thread, e.g. await asyncio.to_thread(run_suite, plan)")
    started = datetime.datetime.now(datetime.UTC)
    clock0 = time.monotonic()
    unavailable = {s.id: s.missing() for s in plan.systems}
    results = Results()
    orders: list[list[str]] = []
    with ExitStack() as stack:
        zookeeper = None
        if any(s.zookeeper and unavailable[s.id] is None for s in plan.systems):
            try:
                zookeeper = stack.enter_context(resolve_zookeeper())
            except Exception as exc:  # no Java, no ZooKeeper package...: v3.x cannot run
                for s in plan.systems:
                    if s.zookeeper:
                        unavailable[s.id] = f"no ZooKeeper: {exc}"
        runnable = [s for s in plan.systems if unavailable[s.id] is None]
        for system in plan.systems:
            if unavailable[system.id] is not None:
                log(f"not run: {system.id}: {unavailable[system.id]}")
        for repetition in range(plan.repetitions):
            order = plan.order(runnable, repetition)
            orders.append([s.id for s in order])
            for system in order:
                if system.id in results.broken:
                    for workload, level in plan.cells(system):
                        results.fail((system.id, workload.name, level), repetition,
                                     f"not tried again: {results.broken[system.id]}")
                    continue
                log(f"repetition {repetition + 1}/{plan.repetitions}: {system.id}")
                run_system(system, repetition, plan, zookeeper, results, log)
    return build_document(plan, unavailable, results, orders=orders, started=started,
                          elapsed=time.monotonic() - clock0)


def run_system(system: System, repetition: int, plan: Plan, zookeeper: str | None,
               results: Results, log: Log = _stderr) -> None:
    """One repetition of one system: its server, its client, every cell."""
    cells = plan.cells(system)
    if not cells:
        return
    server: ServerProcess | None = None
    try:
        with ExitStack() as stack:
            registry = None
            if system.zookeeper:
                assert zookeeper is not None
                registry = stack.enter_context(temporary_chroot(zookeeper, prefix="bench"))
            args = [*system.server_args, *(("--zk", registry) if registry else ())]
            server = stack.enter_context(ServerProcess(system.server_module, args))
            target = Target(server.host, server.port, registry)
            if system.threads:
                _run_threads(system, target, server.pid, cells, repetition, plan, results, log)
            else:
                loop_factory = new_loop_factory(system.loop or "asyncio")
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    runner.run(_run_async(system, target, server.pid, cells, repetition, plan,
                                          results, log))
    except Exception as exc:  # the server did not start, the client could not connect...
        reason = f"{type(exc).__name__}: {exc}{_complaint(server)}"
        log(f"  {system.id} failed: {reason}")
        results.broken[system.id] = reason
        for workload, level in cells:
            key = (system.id, workload.name, level)
            if repetition not in results.runs.get(key, {}):
                results.fail(key, repetition, reason)


def _complaint(server: ServerProcess | None) -> str:
    """The last exception the server printed (its output is read when it stops), if any."""
    if server is None:
        return ""
    lines = "".join(server.output).splitlines()
    errors = [line for line in lines if re.match(r"\w+(Error|Exception)\b", line)]
    if not errors:
        return ""
    where = [line.strip() for line in lines if line.strip().startswith("File ")]
    return f" (the server said: {errors[-1]}{', in ' + where[-1] if where else ''})"


def _label(system: System, workload: Workload, level: int) -> str:
    return f"{system.id} {workload.name} ×{level}"


def _logged(log: Log, label: str, record: dict[str, Any]) -> None:
    log(f"  {label:<34} {record['tps']:>10,.0f} calls/s  p50 {record['p50_us'] or 0:>8,.0f} µs"
        f"  CPU {record['cpu_us']:>7,.1f} µs/call  errors {record['errors']}")


class Broken(Exception):
    """A system failed its very first call: the message says how."""


async def _run_async(system: System, target: Target, server_pid: int,
                     cells: list[tuple[Workload, int]], repetition: int, plan: Plan,
                     results: Results, log: Log) -> None:
    async with asyncio.timeout(FIRST_CALL_TIMEOUT):
        client = await system.open(target)
    answered = False  # has any call of this client been answered yet?
    try:
        for workload, level in cells:
            label = _label(system, workload, level)
            calls = calls_for(workload, level, plan.calls)
            try:
                call = client.caller(workload)
                async with asyncio.timeout(FIRST_CALL_TIMEOUT):
                    answer = await call()
                answered = True
                if not looks_right(workload, answer):
                    raise WrongAnswer(f"{label}: the answer is not the expected one")
                async with asyncio.timeout(CELL_TIMEOUT):
                    run = await measure_async(call, calls=calls, level=level,
                                              warmup=warmup_for(calls, level),
                                              server_pid=server_pid, label=label)
            except Exception as exc:
                if not answered:
                    raise Broken(f"its first call failed: {type(exc).__name__}: {exc}") from exc
                _failed(results, log, (system.id, workload.name, level), repetition, label, exc)
                continue
            _measured(results, log, (system.id, workload.name, level), repetition, label, run)
    finally:
        async with asyncio.timeout(FIRST_CALL_TIMEOUT):
            await client.aclose()


def _measured(results: Results, log: Log, key: Key, repetition: int, label: str,
              run: CellRun) -> None:
    """Keep one cell's measurement, and say what it measured."""
    record = run.record()
    results.add(key, repetition, record)
    _logged(log, label, record)


def _failed(results: Results, log: Log, key: Key, repetition: int, label: str,
            exc: Exception) -> None:
    """Keep one cell's failure, and say so; the other cells still run."""
    log(f"  {label} failed: {type(exc).__name__}: {exc}")
    results.fail(key, repetition, exc)


def _opener(system: System, target: Target, shared: Any,
            workload: Workload) -> Callable[[], tuple[Callable[[], object], Callable[[], None]]]:
    """What each thread runs to get its caller: the shared client's, or a client of its own."""

    def open_caller() -> tuple[Callable[[], object], Callable[[], None]]:
        if shared is not None:
            return shared.caller(workload), lambda: None
        client = system.open(target)
        return client.caller(workload), client.close

    return open_caller


def _run_threads(system: System, target: Target, server_pid: int,
                 cells: list[tuple[Workload, int]], repetition: int, plan: Plan,
                 results: Results, log: Log) -> None:
    shared = system.open(target) if system.shared_client else None
    try:
        for workload, level in cells:
            label = _label(system, workload, level)
            calls = calls_for(workload, level, plan.calls)
            try:
                run = measure_threads(_opener(system, target, shared, workload),
                                      partial(looks_right, workload), calls=calls, level=level,
                                      warmup=warmup_for(calls, level), server_pid=server_pid,
                                      label=label)
            except Exception as exc:
                _failed(results, log, (system.id, workload.name, level), repetition, label, exc)
                continue
            _measured(results, log, (system.id, workload.name, level), repetition, label, run)
    finally:
        if shared is not None:
            shared.close()


# -- the document ----------------------------------------------------------------------------


def _spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that exist; None if none does."""
    found = [v for v in values if v is not None]
    if not found:
        return None
    return {"median": statistics.median(found), "min": min(found), "max": max(found)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(runs: dict[int, dict[str, Any]],
            reference: dict[int, dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Throughput, CPU-per-call and p50 ratios to a reference, per repetition, summarised."""
    common = sorted(set(runs) & set(reference))
    return {
        figure: _spread([_ratio(runs[r][key], reference[r][key]) for r in common])
        for figure, key in (("tps", "tps"), ("cpu", "cpu_us"), ("p50", "p50_us"))
    }


def machine() -> dict[str, Any]:
    """The machine the run was on: cores, Python, platform."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def build_document(plan: Plan, unavailable: dict[str, str | None], results: Results, *,
                   orders: list[list[str]], started: datetime.datetime,
                   elapsed: float) -> dict[str, Any]:
    """The results document: the machine, the run, the systems and one entry per cell.

    Every cell of the matrix is listed, with a ``status``: ``measured`` (with ``runs``, one per
    repetition, their ``median`` and ``spread``, and ``ratios`` to the echo and to ``grpc.aio``
    of the same run), ``skipped`` or ``unavailable`` (with the ``reason``), or ``failed`` (with
    the ``failures``). A ratio is ``{"median", "min", "max"}`` over the repetitions where both
    cells were measured, or None when the reference was not measured.
    """
    cells = []
    for system in plan.systems:
        for workload in plan.workloads:
            for level in plan.levels:
                key = (system.id, workload.name, level)
                cell: dict[str, Any] = {"system": system.id, "workload": workload.name,
                                        "level": level}
                reason = unavailable.get(system.id) or skip_reason(workload, level,
                                                                   threads=system.threads)
                runs = results.runs.get(key, {})
                if unavailable.get(system.id):
                    cell.update(status="unavailable", reason=reason)
                elif reason:
                    cell.update(status="skipped", reason=reason)
                else:
                    cell.update(status="measured" if runs else "failed",
                                calls=calls_for(workload, level, plan.calls),
                                runs=[{"rep": r, **runs[r]} for r in sorted(runs)],
                                failures=results.failures.get(key, []))
                    summaries = {f: _spread([run[f] for run in runs.values()]) for f in FIGURES}
                    cell["median"] = {f: s["median"] if s else None for f, s in summaries.items()}
                    cell["spread"] = {f: [s["min"], s["max"]] if s else None
                                      for f, s in summaries.items()}
                    cell["ratios"] = {}
                    for suffix, reference in REFERENCES:
                        ref_runs = results.runs.get((reference, workload.name, level), {})
                        for figure, value in _ratios(runs, ref_runs).items():
                            cell["ratios"][f"{figure}_vs_{suffix}"] = value
                cells.append(cell)
    return {
        "format": FORMAT,
        "version": VERSION,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "run": {
            "length": "full" if run_length(0, 1) else "short",
            "repetitions": plan.repetitions,
            "calls_override": plan.calls,
            "workloads": [w.name for w in plan.workloads],
            "levels": list(plan.levels),
            "order": orders,
            "elapsed_s": round(elapsed, 1),
            "references": {"echo": ECHO, "grpc_aio": GRPC_AIO},
        },
        "systems": [{"id": s.id, "label": s.label, "style": s.style, "loop": s.loop,
                     "note": s.note, "available": unavailable.get(s.id) is None,
                     "reason": unavailable.get(s.id)} for s in plan.systems],
        "cells": cells,
    }
