"""What the suite measures: three workloads, four levels of calls in flight, and how many calls.

=========  ===================================================  ================================
workload   the call                                             levels measured
=========  ===================================================  ================================
small      ``get_user(123456)``: a small request, a ~100-byte   1, 16, 64, 256
           answer (the echo systems send 100 bytes both ways)
16KiB      ``echo(16 KiB of bytes)``: the bytes there and back  1, 16, 64, 256
1MiB       ``echo(1 MiB of bytes)``                             1, 16
=========  ===================================================  ================================

Level 1 is one call at a time (p50 and p99 are its figures); the other levels are a closed loop
with that many calls in flight (throughput is its figure). A level can be left out for a reason,
which the table prints in its row (see :func:`skip_reason`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stages.harness.bench import default_warmup, run_length

__all__ = [
    "LEVELS",
    "REPETITIONS",
    "SMALL_ID",
    "WORKLOADS",
    "Workload",
    "calls_for",
    "repetitions",
    "skip_reason",
    "warmup_for",
]

LEVELS: Final = (1, 16, 64, 256)
"""Calls in flight; 1 is one call at a time."""

SMALL_ID: Final = 123456
"""The user asked for by the small workload (any id is known to every demo service)."""


@dataclass(frozen=True)
class Workload:
    """One kind of call.

    Attributes:
        name: short name, used on the command line and in results.json.
        payload: the bytes sent by ``echo`` workloads; for ``small``, the 100 bytes the echo
            systems send in place of a ``get_user`` (they have no methods).
        max_level: the most calls in flight that make sense with this payload.
        calls: measured calls per level, ``(short, full)`` (see :func:`calls_for`).
    """

    name: str
    payload: bytes
    max_level: int
    calls: tuple[tuple[int, int, int], ...]

    @property
    def is_small(self) -> bool:
        """True for the ``get_user`` workload (the others echo their payload)."""
        return self.name == "small"

    @property
    def text(self) -> str:
        """The payload as text, for v1.0, whose parameters are strings (ASCII ``x``)."""
        return self.payload.decode("ascii")


# Measured calls per cell, (level, short, full). Why these numbers: each cell of the short run
# should take under a second on the slowest system (v1.0, a connection per call, ~1-2k calls/s),
# so that the whole matrix, three times over, fits in 10 minutes on 2 cores (it took under 4 on
# a busy one). A closed loop needs several rounds of its workers to be measured, hence more calls
# at more calls in flight. The full run makes five times as many, five times over (~30 min).
WORKLOADS: Final = (
    Workload("small", b"x" * 100, 256,
             ((1, 300, 1500), (16, 800, 4000), (64, 1600, 8000), (256, 3200, 16000))),
    Workload("16KiB", b"x" * 16384, 256,
             ((1, 200, 1000), (16, 500, 2500), (64, 1000, 5000), (256, 2048, 10240))),
    Workload("1MiB", b"x" * (1 << 20), 16, ((1, 20, 100), (16, 48, 240))),
)

REPETITIONS: Final = (3, 5)
"""Interleaved repetitions of the whole matrix, ``(short, full)``."""

THREAD_LEVEL_LIMIT: Final = 64
"""Most threads a thread-per-call system is measured with (see :func:`skip_reason`)."""


def calls_for(workload: Workload, level: int, override: int | None = None) -> int:
    """Measured calls of one cell: the run length's (``RPC_BENCH``), or ``override``."""
    if override is not None:
        return override
    for lvl, short, full in workload.calls:
        if lvl == level:
            return run_length(short, full)
    raise ValueError(f"no call count for {workload.name} at {level} in flight")


def warmup_for(calls: int, level: int) -> int:
    """Warm-up calls of one cell: the harness's 10 %, and at least one per call in flight
    (every worker, and every connection of a thread-per-connection system, warms up)."""
    return max(default_warmup(calls), level)


def repetitions(override: int | None = None) -> int:
    """Repetitions of the matrix: the run length's (``RPC_BENCH``), or ``override``."""
    return override if override is not None else run_length(*REPETITIONS)


def skip_reason(workload: Workload, level: int, *, threads: bool) -> str | None:
    """Why this combination is not measured, or None if it is.

    Args:
        threads: the system makes calls in flight with one blocking thread each.
    """
    if level > workload.max_level:
        return (f"more than {workload.max_level} calls of {workload.name} in flight hold that "
                "many payloads per side at once: a test of memory bandwidth, not of RPC")
    if threads and level > THREAD_LEVEL_LIMIT:
        return (f"more than {THREAD_LEVEL_LIMIT} threads, one call each: on 2 cores that "
                "measures the OS scheduler and the GIL, not the RPC")
    return None
