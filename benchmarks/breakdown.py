"""Where one v3.x call's time goes, layer by layer: a profile grouped by who owns the code.

The suite (:mod:`benchmarks.suite`) says *how much* a call costs; this module says *where*. It
runs v3.x's provider and consumer in this process, on one event loop, with every governance
feature the suite turns on (p2c balancing with outlier detection, circuit breakers, metrics on
both sides), makes calls under :mod:`cProfile`, and adds up each function's *own* time (the
time spent in the function itself, not in those it calls) by the layer that owns it:

====================================  =========================================================
layer                                 the code it holds
====================================  =========================================================
frames (v1.0)                         ``stages/v1_0/protocol.py``: the sans-IO frame codec
serialization (v2.0, v2.1 hot path)   ``stages/v2_0/serializers.py``, ``pickle_scan.py``,
                                      ``limits.py``, ``stages/v2_1/fastpath.py``, stdlib pickle
proxy and dispatch (v1.0, v2.0)       the rest of ``stages/v1_0`` and ``stages/v2_0``: proxies,
                                      argument checks, the server's dispatch, the method itself
connection (v2.1)                     ``stages/v2_1``: multiplexed connections, writer, reader,
                                      deadlines, heartbeats, the interceptor chain
balancer (v3.1)                       ``stages/v3_x/balancer.py``, ``outlier.py``
breaker (v3.2)                        ``stages/v3_x/breaker.py``
policy and deadline (v3.2)            ``stages/v3_x/policy.py``, ``retry.py``, ``deadline.py``,
                                      ``settings.py``
metrics (v3.3)                        ``stages/v3_x/metrics.py`` and ``prometheus_client``
v3.x client and server                the rest of ``stages/v3_x`` (choosing, attempts, views)
asyncio                               the event loop: ``asyncio/``, ``selectors``, ``socket``
other                                 everything else (the measuring loop among it)
====================================  =========================================================

Two rules make the sum honest:

* **Built-in functions are charged to their callers.** cProfile lists C functions (a socket's
  ``send``, ``_pickle.loads``, ``struct.unpack``) under a file of their own, ``~``. Their own
  time is split among the functions that called them, in proportion to the time each caller
  spent in them, and added to the callers' layers: ``_pickle.loads`` called by the serializer is
  serialization, a socket's ``send`` called by asyncio's transport is asyncio.
* **Waiting is not work.** The time inside ``epoll.poll`` (or ``select``) is the loop waiting for
  the kernel; it is reported apart (:data:`WAITING`) and left out of the shares.

The profiler makes every Python function call slower, and the simplest functions the most, so
the microseconds it reports are inflated: :class:`Breakdown` gives the wall time per call with
and without it, and its shares are the figure to read.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from stages.harness.bench import measure_closed_loop

__all__ = [
    "LAYERS",
    "OTHER",
    "WAITING",
    "Breakdown",
    "Share",
    "breakdown_of",
    "layer_of",
    "own_time_by_layer",
    "profile_calls",
    "v3_in_process",
    "where_time_goes",
]

LAYERS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("frames (v1.0)", ("stages/v1_0/protocol.py",)),
    ("serialization (v2.0, v2.1 hot path)", (
        "stages/v2_0/serializers.py", "stages/v2_0/pickle_scan.py", "stages/v2_0/limits.py",
        "stages/v2_1/fastpath.py", "pickle.py", "copyreg.py", "pickletools.py")),
    ("proxy and dispatch (v1.0, v2.0)", ("stages/v1_0/", "stages/v2_0/")),
    ("connection (v2.1)", ("stages/v2_1/",)),
    ("balancer (v3.1)", ("stages/v3_x/balancer.py", "stages/v3_x/outlier.py")),
    ("breaker (v3.2)", ("stages/v3_x/breaker.py",)),
    ("policy and deadline (v3.2)", (
        "stages/v3_x/policy.py", "stages/v3_x/retry.py", "stages/v3_x/deadline.py",
        "stages/v3_x/settings.py")),
    ("metrics (v3.3)", ("stages/v3_x/metrics.py", "prometheus_client/")),
    ("v3.x client and server", ("stages/v3_x/",)),
    ("asyncio", ("asyncio/", "selectors.py", "socket.py", "ssl.py")),
)
"""Each layer and the code it owns, most specific first: a file belongs to the first layer with
a pattern that matches it. A pattern ending in ``/`` is a directory anywhere in the path; any
other names a file by the end of its path."""

OTHER: Final = "other"
"""The layer of code no pattern of :data:`LAYERS` matches."""

WAITING: Final = "waiting for I/O"
"""The time the loop spent waiting in ``epoll.poll``/``select``: reported apart, never a share."""

_WAITS: Final = ("of 'select.epoll' objects>", "of 'select.poll' objects>",
                 "<built-in method select.select>")
"""How cProfile names the built-in functions a loop waits in (``<method 'poll' of ...>``)."""

#: cProfile's statistics: (file, line, function) -> (primitive calls, calls, own time,
#: cumulative time, callers), where callers map the same keys to (calls, primitive calls, own
#: time, cumulative time) of the calls from that caller.
Key = tuple[str, int, str]
CallerStats = Mapping[Key, tuple[int, int, float, float]]
Stats = Mapping[Key, tuple[int, int, float, float, CallerStats]]

Call = Callable[[], Awaitable[object]]


def layer_of(filename: str) -> str:
    """The layer (a name of :data:`LAYERS`, or :data:`OTHER`) that owns a source file.

    Args:
        filename: a path as cProfile records it (absolute or not; ``\\`` is read as ``/``).
            Built-in functions (file ``~``) have no layer of their own: see
            :func:`own_time_by_layer`.

    Returns:
        The first layer with a pattern matching the path.
    """
    path = "/" + filename.replace("\\", "/").lstrip("/")
    for layer, patterns in LAYERS:
        for pattern in patterns:
            if pattern.endswith("/") and f"/{pattern}" in path:
                return layer
            if not pattern.endswith("/") and path.endswith(f"/{pattern}"):
                return layer
    return OTHER


def _is_builtin(key: Key) -> bool:
    return key[0] == "~"


def own_time_by_layer(stats: Stats) -> dict[str, float]:
    """Add up the own time of every profiled function by the layer that owns it.

    Args:
        stats: a profile's statistics, as ``pstats.Stats(profile).stats``.

    Returns:
        Seconds per layer, with :data:`WAITING` for the time spent waiting for I/O; only layers
        with some time are listed. A built-in function's own time is split among its callers in
        proportion to the time each spent in it, and charged to their layers (a built-in called
        by a built-in passes its share on the same way, up to Python code); a built-in with no
        caller recorded is charged to :data:`OTHER`. The values add up to the profile's total
        own time.
    """
    seconds: dict[str, float] = {}

    def charge(key: Key, amount: float, depth: int = 0) -> None:
        if amount == 0.0:
            return
        if not _is_builtin(key):
            layer = layer_of(key[0])
        elif any(wait in key[2] for wait in _WAITS):
            layer = WAITING
        else:
            callers = stats[key][4] if key in stats else {}
            spent = sum(entry[2] for entry in callers.values())
            if depth < 8 and spent > 0:
                for caller, entry in callers.items():
                    charge(caller, amount * entry[2] / spent, depth + 1)
                return
            layer = OTHER  # no caller recorded (or a cycle of built-ins): no better owner
        seconds[layer] = seconds.get(layer, 0.0) + amount

    for key, (_, _, own, _, _) in stats.items():
        charge(key, own)
    return seconds


@dataclass(frozen=True)
class Share:
    """One layer's part of a call.

    Attributes:
        layer: the layer's name.
        us_per_call: its own time per call, in µs, profiled (inflated by the profiler).
        share: its part of the time the calls spent working (waiting left out), 0 to 1.
    """

    layer: str
    us_per_call: float
    share: float


@dataclass(frozen=True)
class Breakdown:
    """Where the time of ``calls`` calls went, ``in_flight`` at a time.

    Attributes:
        calls, in_flight: what was profiled.
        plain_us_per_call: wall-clock µs per call without the profiler (consumer and provider
            together, in one process).
        profiled_us_per_call: the same with the profiler on.
        waiting_us_per_call: profiled µs per call spent waiting for I/O (not in the shares).
        layers: one entry per layer of :data:`LAYERS` (and :data:`OTHER`), in that order,
            including layers that took no time; their shares add up to 1.
    """

    calls: int
    in_flight: int
    plain_us_per_call: float
    profiled_us_per_call: float
    waiting_us_per_call: float
    layers: tuple[Share, ...]

    def share(self, layer: str) -> float:
        """The share of one layer (0 to 1).

        Raises:
            KeyError: no layer has that name.
        """
        for entry in self.layers:
            if entry.layer == layer:
                return entry.share
        raise KeyError(layer)

    @property
    def slowdown(self) -> float:
        """How many times slower the profiled calls were than the plain ones."""
        return self.profiled_us_per_call / self.plain_us_per_call


def breakdown_of(stats: Stats, *, calls: int, in_flight: int, plain_seconds: float,
                 profiled_seconds: float) -> Breakdown:
    """The :class:`Breakdown` of a profile of ``calls`` calls (see :func:`own_time_by_layer`).

    Raises:
        ValueError: ``calls < 1``, or the profile recorded no work at all.
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, not {calls}")
    seconds = own_time_by_layer(stats)
    waiting = seconds.pop(WAITING, 0.0)
    working = sum(seconds.values())
    if working <= 0:
        raise ValueError("the profile recorded no work")
    names = [layer for layer, _ in LAYERS] + [OTHER]
    return Breakdown(
        calls=calls, in_flight=in_flight,
        plain_us_per_call=plain_seconds / calls * 1e6,
        profiled_us_per_call=profiled_seconds / calls * 1e6,
        waiting_us_per_call=waiting / calls * 1e6,
        layers=tuple(Share(name, seconds.get(name, 0.0) / calls * 1e6,
                           seconds.get(name, 0.0) / working) for name in names),
    )


async def profile_calls(call: Call, calls: int, in_flight: int) -> tuple[Stats, float, float]:
    """Make ``calls`` calls in a closed loop of ``in_flight``, without and then with cProfile.

    A warm-up of ``in_flight`` rounds comes first (connections open, code paths warm). Only this
    thread is profiled: run the provider on the same event loop to see both sides.

    Returns:
        (the profile's statistics, seconds without the profiler, seconds with it).

    Raises:
        RuntimeError: a call failed (a profile of errors says nothing about calls).
    """
    for phase in ("warm-up", "plain"):
        warm = await measure_closed_loop(call, in_flight * in_flight if phase == "warm-up"
                                         else calls, in_flight, warmup=0, label=phase)
        if warm.errors:
            raise RuntimeError(f"{phase}: {warm.errors} calls failed: {dict(warm.error_types)}")
    plain = warm.elapsed
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        result = await measure_closed_loop(call, calls, in_flight, warmup=0, label="profiled")
    finally:
        profiler.disable()
    profiled = time.perf_counter() - start
    if result.errors:
        raise RuntimeError(f"profiled: {result.errors} calls failed: {dict(result.error_types)}")
    stats: Stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return stats, plain, profiled


@asynccontextmanager
async def v3_in_process() -> AsyncIterator[Call]:
    """v3.x's demo provider and a consumer, both in this process and on this event loop, with
    what the suite's ``v3_x`` system turns on: p2c and outlier detection (the defaults),
    circuit breakers, and metrics on both sides.

    The consumer finds the provider in a static registry instead of ZooKeeper: a consumer reads
    the registry only when the list of providers changes, never per call.

    Yields:
        The call profiled: ``get_user`` of the suite's small workload, through an async proxy.
    """
    from benchmarks.workloads import SMALL_ID
    from stages.v2_0.api import address_of
    from stages.v2_0.user_stub import UserApi
    from stages.v3_x import BreakerConfig, Client, ClientConfig, ServerConfig, StaticRegistry
    from stages.v3_x.cli import new_server
    from stages.v3_x.metrics import ClientMetrics, ServerMetrics

    server = new_server(StaticRegistry([]), ServerConfig(host="127.0.0.1", port=0))
    ServerMetrics().attach(server)
    await server.start()
    try:
        info = server.provider_info(address_of(UserApi))
        client = Client(StaticRegistry([info]), ClientConfig(breaker=BreakerConfig()))
        ClientMetrics().attach(client)
        try:
            users = client.async_proxy(UserApi)
            yield lambda: users.get_user(SMALL_ID)
        finally:
            await client.aclose()
    finally:
        await server.aclose()


async def where_time_goes(calls: int, in_flight: int = 64) -> Breakdown:
    """Profile ``calls`` v3.x calls made in this process (see :func:`v3_in_process`) and group
    their time by layer.

    Args:
        calls: profiled calls, ``>= 1`` (a few thousand give steady shares).
        in_flight: calls in flight, as the suite's closed loop makes them.

    Raises:
        RuntimeError: a call failed.
    """
    async with v3_in_process() as call:
        stats, plain, profiled = await profile_calls(call, calls, in_flight)
    return breakdown_of(stats, calls=calls, in_flight=in_flight, plain_seconds=plain,
                        profiled_seconds=profiled)
