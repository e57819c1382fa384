"""The Markdown report of a results document: one table per workload, then the goals.

Each table row is one system at one level of calls in flight: its median throughput with the
min–max over repetitions, its latency, its CPU time per call (client + server), and its ratios
to ``grpc.aio`` and to the bare asyncio echo (the ceiling), each the median (min–max) of the
ratios taken within each repetition. Rows of what was not measured say why.

The goals are issue 15's, each with the figure it is judged by: throughput ratios for the
throughput goals, with the ratio of CPU time per call beside them (the steadier figure on a shared
machine), the CPU ratio for the cost of governance, p50 ratios for latency.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["GOALS", "Goal", "markdown", "pair_ratio"]

_COLUMNS: Final = ("system", "in flight", "calls/s", "p50 µs", "p99 µs",
                   "CPU µs/call (client + server)", "TPS ×grpc.aio", "TPS ×echo",
                   "CPU ×grpc.aio", "CPU ×echo", "p50 ×echo")


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _with_spread(median: float | None, spread: Sequence[float] | None, digits: int = 0) -> str:
    if median is None:
        return "–"
    if not spread or spread[0] == spread[1]:
        return _number(median, digits)
    return f"{_number(median, digits)} ({_number(spread[0], digits)}–{_number(spread[1], digits)})"


def _ratio(value: dict[str, float] | None) -> str:
    if value is None:
        return "–"
    return _with_spread(value["median"], (value["min"], value["max"]), 2)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _measured_row(label: str, cell: dict[str, Any]) -> str:
    median, spread, ratios = cell["median"], cell["spread"], cell["ratios"]
    cpu = "–"
    if median["cpu_us"] is not None:
        cpu = (f"{median['cpu_us']:,.1f} = {median['client_cpu_us']:,.1f} + "
               f"{median['server_cpu_us']:,.1f}")
    return _row([label, str(cell["level"]), _with_spread(median["tps"], spread["tps"]),
                 _number(median["p50_us"]), _number(median["p99_us"]), cpu,
                 _ratio(ratios["tps_vs_grpc_aio"]), _ratio(ratios["tps_vs_echo"]),
                 _ratio(ratios["cpu_vs_grpc_aio"]), _ratio(ratios["cpu_vs_echo"]),
                 _ratio(ratios["p50_vs_echo"])])


def _note_row(label: str, levels: str, note: str) -> str:
    return _row([label, levels, note, *[""] * (len(_COLUMNS) - 3)])


def _skipped_for_all(document: dict[str, Any], workload: str) -> dict[int, str]:
    """Levels skipped for the same reason by every system that ran: said once, not per row."""
    ran = {s["id"] for s in document["systems"] if s["available"]}
    reasons: dict[int, set[str]] = {}
    for c in document["cells"]:
        if c["workload"] == workload and c["system"] in ran:
            reasons.setdefault(c["level"], set()).add(
                c["reason"] if c["status"] == "skipped" else "")
    return {level: next(iter(found)) for level, found in reasons.items()
            if len(found) == 1 and "" not in found}


def _workload_table(document: dict[str, Any], workload: str) -> list[str]:
    labels = {s["id"]: s["label"] for s in document["systems"]}
    common = _skipped_for_all(document, workload)
    lines = []
    for reason in dict.fromkeys(common.values()):
        levels = ", ".join(str(level) for level, r in common.items() if r == reason)
        lines += [f"Not measured, for any system: {levels} in flight ({reason}).", ""]
    lines += [_row(list(_COLUMNS)), _row(["---"] * len(_COLUMNS))]
    for system in document["systems"]:
        cells = [c for c in document["cells"] if c["system"] == system["id"]
                 and c["workload"] == workload and c["level"] not in common]
        label = labels[system["id"]]
        if not system["available"]:
            lines.append(_note_row(label, "all", f"not run: {system['reason']}"))
            continue
        lines += [_measured_row(label, c) for c in cells if c["status"] == "measured"]
        # What was not measured: one row per reason, naming the levels it concerns.
        notes = [(c["level"], f"FAILED: {c['failures'][0]['error'] if c['failures'] else '?'}")
                 for c in cells if c["status"] == "failed"]
        notes += [(c["level"], f"skipped: {c['reason']}") for c in cells
                  if c["status"] == "skipped"]
        for note in dict.fromkeys(note for _, note in notes):
            levels = ", ".join(str(level) for level, n in notes if n == note)
            lines.append(_note_row(label, levels, note))
    return lines


# -- the goals -------------------------------------------------------------------------------


def pair_ratio(document: dict[str, Any], a: tuple[str, str, int], b: tuple[str, str, int],
               figure: str) -> dict[str, float] | None:
    """The ratio of ``figure`` between two cells ``(system, workload, level)``, taken per
    repetition: median, min and max; None if the two were not measured in a same repetition."""
    cells = {(c["system"], c["workload"], c["level"]): c for c in document["cells"]}
    runs_a = {r["rep"]: r for r in cells.get(a, {}).get("runs", [])}
    runs_b = {r["rep"]: r for r in cells.get(b, {}).get("runs", [])}
    ratios = [runs_a[r][figure] / runs_b[r][figure] for r in sorted(set(runs_a) & set(runs_b))
              if runs_a[r][figure] is not None and runs_b[r][figure]]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


@dataclass(frozen=True)
class Goal:
    """One goal: ``figure`` of cell ``a`` divided by that of cell ``b`` must be ``op target``;
    ``beside`` is a second figure shown with it (None for none)."""

    text: str
    a: tuple[str, str, int]
    b: tuple[str, str, int]
    figure: str
    op: str
    target: float
    beside: str | None = None

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == "≥" else value <= self.target


_FIGURE_NAMES: Final = {"tps": "TPS ratio", "cpu_us": "CPU µs/call ratio", "p50_us": "p50 ratio"}

GOALS: Final = (
    Goal("v3.x (all governance) at 64 in flight vs grpc.aio", ("v3_x", "small", 64),
         ("grpc-aio", "small", 64), "tps", "≥", 10.0, "cpu_us"),
    Goal("v3.x (all governance) at 64 in flight vs the echo", ("v3_x", "small", 64),
         ("echo", "small", 64), "tps", "≥", 0.4, "cpu_us"),
    Goal("v3.x one call at a time vs RPyC", ("v3_x", "small", 1), ("rpyc", "small", 1),
         "tps", "≥", 1.0, "cpu_us"),
    Goal("governance: v3.x vs v2.1 at 64 in flight (cost ≤ 20 %)", ("v3_x", "small", 64),
         ("v2_1", "small", 64), "cpu_us", "≤", 1.2, "tps"),
    Goal("16 KiB at 64 in flight: v3.x vs the echo", ("v3_x", "16KiB", 64),
         ("echo", "16KiB", 64), "tps", "≥", 0.7, "cpu_us"),
    Goal("v2.1 at 64 in flight vs the echo", ("v2_1", "small", 64), ("echo", "small", 64),
         "tps", "≥", 0.5, "cpu_us"),
    Goal("v2.1 async proxy one at a time: p50 vs the echo's", ("v2_1", "small", 1),
         ("echo", "small", 1), "p50_us", "≤", 1.3),
    Goal("v2.1 blocking proxy one at a time: p50 vs a blocking socket to the echo",
         ("v2_1-blocking", "small", 1), ("echo-socket", "small", 1), "p50_us", "≤", 1.5),
    Goal("v3.x blocking proxy one at a time: p50 vs a blocking socket to the echo",
         ("v3_x-blocking", "small", 1), ("echo-socket", "small", 1), "p50_us", "≤", 1.5),
)


def goals_table(document: dict[str, Any]) -> list[str]:
    """The goals, as measured in this run (those whose cells were not measured say so)."""
    lines = [_row(["goal", "judged by", "measured", "target", "met", "beside it"]),
             _row(["---"] * 6)]
    for goal in GOALS:
        value = pair_ratio(document, goal.a, goal.b, goal.figure)
        beside = ""
        if goal.beside is not None:
            other = pair_ratio(document, goal.a, goal.b, goal.beside)
            beside = f"{_FIGURE_NAMES[goal.beside]} {_ratio(other)}"
        met = "–" if value is None else ("yes" if goal.met(value["median"]) else "no")
        lines.append(_row([goal.text, _FIGURE_NAMES[goal.figure],
                           _ratio(value) if value else "not measured in this run",
                           f"{goal.op} {goal.target:g}", met, beside]))
    return lines


# -- the whole report ------------------------------------------------------------------------


def markdown(document: dict[str, Any]) -> str:
    """The report of a results document, as Markdown."""
    machine, run = document["machine"], document["run"]
    lines = [
        "## Benchmark suite: ratios to grpc.aio and to the bare asyncio echo (the ceiling)",
        "",
        f"{machine['usable_cores']} usable cores ({machine['cores']} in all), "
        f"{machine['implementation']} {machine['python']}, {machine['platform']}. "
        f"Run length {run['length']}, {run['repetitions']} interleaved repetition(s), "
        f"{run['elapsed_s']:.0f} s. Every server is a process of its own; the clients run in "
        "the measuring process, all on 127.0.0.1.",
        "",
        "Figures are medians over the repetitions, with (min–max). A ratio is taken between "
        "two cells of the same repetition, then the median (min–max) of those is given. "
        "TPS ×X: calls/s over X's (higher is better). CPU ×X: CPU µs per call, client + "
        "server, over X's (lower is better; the steadier figure on a shared machine). "
        "p50 ×echo: latency over the echo's (the figure of one call at a time). Level 1 is one "
        "call at a time; other levels are calls in flight (tasks for async clients, threads "
        "for blocking ones).",
    ]
    for workload in run["workloads"]:
        lines += ["", f"### {workload}", "", *_workload_table(document, workload)]
    lines += ["", "### The goals (issue 15), in this run", "", *goals_table(document), "",
              "Not measured here: the 1 MiB copy count, and the memory bounds (10,000 calls in "
              "flight, 1,000 idle connections), which tests/v2_1/test_memory_bounds.py measures "
              "and holds to stated bounds.",
              "", "### How each system calls", ""]
    lines += [f"- **{s['label']}** (`{s['id']}`): {s['note']}" for s in document["systems"]]
    return "\n".join(lines) + "\n"
