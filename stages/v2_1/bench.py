"""v2.1's benchmark: our framework next to gRPC (``grpc.aio``) and a bare asyncio echo.

All three run in the same run on the same machine, each server in its own process, each client
on one connection with a given number of calls in flight, for two payloads: a ~100-byte
``get_user`` and a 16 KiB echo. The figures that matter are the *ratios*, measured together:
absolute calls/s depend on the machine, ratios much less.

The blocking proxy is measured one call at a time from a plain thread, as a script would use it.

Where the processes run matters for the one-call-at-a-time figures. Unpinned, the kernel wakes a
server either on the client's CPU or on the other (idle) one, and which it picks differs from
process to process and from run to run; on a virtual machine the two can differ by tens of
microseconds. With ``pin=True`` (``bench --pin``) the client runs on one CPU and every server on
the others, the same for all three peers, which makes the ratios steadier.

The bare echo is measured twice for small calls: as bare asyncio reads (a plain ``Protocol``: a
new 256 KiB object per read) and with its client receiving into a buffer it keeps, as v2.1's
connections do (``stages.v2_1.reader``). Whether the plain read costs extra depends on the C
library's state: with glibc, until the process has once freed a large allocation whole, every
such read is an ``mmap``, an ``mremap`` and a ``munmap`` more. The buffered echo never pays that,
whatever the state, so the ratios against it are the ones that do not depend on it; both are
given.

:func:`dispatch_paths` measures something else: what each way a v2.1 server runs a method
(:class:`~stages.v2_1.server.Run`: inline, in the thread pool, as a task) costs per call, with
methods that do nothing, so that the difference between the paths is all there is to see. It
runs client and server in this process, on one event loop: the figures include the client's
work, the same for every path.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import socket
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from stages.harness.bench import (
    BenchResult,
    default_warmup,
    measure_closed_loop,
    measure_sequential,
)
from stages.harness.peers.echo_peer import EchoPeerClient, blocking_call
from stages.harness.peers.grpc_peer import GrpcPeerClient
from stages.harness.process import ServerProcess, cpu_seconds
from stages.v2_0.api import api_spec, rpc_api
from stages.v2_0.serializers import Outcome, PickleSerializer, TypeRegistry
from stages.v2_0.user_stub import InventoryApi, User, UserApi
from stages.v2_1 import fastpath as hot
from stages.v2_1.client import Client
from stages.v2_1.config import ClientConfig
from stages.v2_1.server import Run, Server

__all__ = ["run_comparison", "ratios", "median_ratios", "where_time_goes", "CpuShare", "LEVELS",
           "cpu_split", "placement", "ServerStarter", "dispatch_paths", "PathCost", "PathsApi",
           "PathsImpl", "fastpath_gains", "Gain", "blocking_routes", "RouteCost"]

LEVELS = (1, 4, 16, 64)
SMALL_BODY = b"x" * 100
BLOB = b"x" * 16384
#: The bare echo whose client receives into a buffer it keeps, as v2.1's connections do.
BUFFERED_ECHO = "bare echo 100 B, buffered reads"


def measure_blocking(fn: Callable[[], Any], n: int, label: str) -> BenchResult:
    """Time ``n`` blocking calls one after the other (after a warm-up)."""
    for _ in range(default_warmup(n)):
        fn()
    latencies = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return BenchResult(label=label, mode="sequential", concurrency=1, offered_rate=None,
                       latencies=tuple(latencies), elapsed=time.perf_counter() - start)


ServerStarter = Callable[..., contextlib.AbstractContextManager[ServerProcess]]


def cpu_split() -> tuple[set[int], set[int]] | None:
    """``(client CPUs, server CPUs)`` for a pinned run: the first usable CPU for the client, the
    rest for the servers; None when fewer than two CPUs are usable."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) >= 2 else None


@contextlib.contextmanager
def placement(split: tuple[set[int], set[int]] | None) -> Iterator[ServerStarter]:
    """Run the block with this process on the client CPUs; the returned function starts a
    server process on the server CPUs (it inherits them, threads and all). Restores the
    affinity afterwards. With ``split`` None nothing is pinned."""
    if split is None:
        yield ServerProcess
        return
    client_cpus, server_cpus = split
    before = os.sched_getaffinity(0)

    @contextlib.contextmanager
    def start(module: str, args: Sequence[str] = ()) -> Iterator[ServerProcess]:
        os.sched_setaffinity(0, server_cpus)
        try:
            proc = ServerProcess(module, list(args)).start()
        finally:
            os.sched_setaffinity(0, client_cpus)
        try:
            yield proc
        finally:
            proc.stop()

    os.sched_setaffinity(0, client_cpus)
    try:
        yield start
    finally:
        os.sched_setaffinity(0, before)


async def _sweep(call: Callable[[], Awaitable[object]], n: int, label: str,
                 levels: tuple[int, ...]) -> dict[int, BenchResult]:
    out = {}
    for level in levels:
        if level == 1:
            out[level] = await measure_sequential(call, n, label=label)
        else:
            out[level] = await measure_closed_loop(call, n * 4, level, label=label)
    return out


async def run_comparison(n: int, levels: tuple[int, ...] = LEVELS, serializer: str = "pickle",
                         pin: bool = False) -> dict[str, dict[int, BenchResult]]:
    """One run of every workload; servers in child processes, clients here.

    Args:
        pin: client on one CPU, servers on the others (see the module's docstring).
    """
    with placement(cpu_split() if pin else None) as server:
        return await _run_comparison(n, levels, serializer, server)


async def _run_comparison(n: int, levels: tuple[int, ...], serializer: str,
                          server: ServerStarter) -> dict[str, dict[int, BenchResult]]:
    curves: dict[str, dict[int, BenchResult]] = {}
    with server("stages.v2_1") as ours:
        client = Client(ours.host, ours.port)
        users = client.async_proxy(UserApi, serializer=serializer)
        inventory = client.async_proxy(InventoryApi, serializer=serializer)
        curves["v2.1 get_user"] = await _sweep(lambda: users.get_user(123456), n,
                                               "v2.1 get_user", levels)
        curves["v2.1 echo 16 KiB"] = await _sweep(lambda: inventory.echo(BLOB), n,
                                                  "v2.1 echo 16 KiB", levels)
        await client.aclose()
        with Client(ours.host, ours.port) as blocking_client:
            blocking = blocking_client.proxy(UserApi, serializer=serializer)
            result = await asyncio.to_thread(measure_blocking, lambda: blocking.get_user(123456),
                                             n, "v2.1 get_user (blocking proxy)")
            curves["v2.1 get_user (blocking proxy)"] = {1: result}
    with server("stages.harness.peers.grpc_peer") as grpc_server:
        grpc_client = GrpcPeerClient()
        await grpc_client.connect(grpc_server.host, grpc_server.port)
        curves["grpc.aio get_user"] = await _sweep(lambda: grpc_client.get_user(123456), n,
                                                   "grpc.aio get_user", levels)
        curves["grpc.aio echo 16 KiB"] = await _sweep(lambda: grpc_client.echo(BLOB), n,
                                                      "grpc.aio echo 16 KiB", levels)
        await grpc_client.aclose()
    with server("stages.harness.peers.echo_peer") as echo_server:
        echo = EchoPeerClient()
        await echo.connect(echo_server.host, echo_server.port)
        curves["bare echo 100 B"] = await _sweep(lambda: echo.call(SMALL_BODY), n,
                                                 "bare echo 100 B", levels)
        curves["bare echo 16 KiB"] = await _sweep(lambda: echo.call(BLOB), n,
                                                  "bare echo 16 KiB", levels)
        await echo.aclose()
        # The same echo, its client reading as v2.1's connections read (see stages.v2_1.reader).
        buffered = EchoPeerClient(buffered_reads=True)
        await buffered.connect(echo_server.host, echo_server.port)
        curves[BUFFERED_ECHO] = await _sweep(lambda: buffered.call(SMALL_BODY), n, BUFFERED_ECHO,
                                             levels)
        await buffered.aclose()
    return curves


def ratios(curves: dict[str, dict[int, BenchResult]]) -> dict[str, float]:
    """The goals of v2.1, as ratios measured in one run."""
    top = max(curves["v2.1 get_user"])
    return {
        f"TPS at {top} in flight, small: v2.1 / grpc.aio":
            curves["v2.1 get_user"][top].tps / curves["grpc.aio get_user"][top].tps,
        f"TPS at {top} in flight, small: v2.1 / bare echo":
            curves["v2.1 get_user"][top].tps / curves["bare echo 100 B"][top].tps,
        f"TPS at {top} in flight, 16 KiB: v2.1 / grpc.aio":
            curves["v2.1 echo 16 KiB"][top].tps / curves["grpc.aio echo 16 KiB"][top].tps,
        "p50 one at a time: async proxy / bare echo":
            curves["v2.1 get_user"][1].p50 / curves["bare echo 100 B"][1].p50,
        "p50 one at a time: blocking proxy / bare echo":
            curves["v2.1 get_user (blocking proxy)"][1].p50 / curves["bare echo 100 B"][1].p50,
        "p50 one at a time: grpc.aio / bare echo":
            curves["grpc.aio get_user"][1].p50 / curves["bare echo 100 B"][1].p50,
        f"TPS at {top} in flight, small: v2.1 / echo, buffered reads":
            curves["v2.1 get_user"][top].tps / curves[BUFFERED_ECHO][top].tps,
        "p50 one at a time: async proxy / echo, buffered reads":
            curves["v2.1 get_user"][1].p50 / curves[BUFFERED_ECHO][1].p50,
    }


def median_ratios(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each ratio over several runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


@dataclass(frozen=True)
class CpuShare:
    """Where the time of a run went: CPU per call and how busy each side was."""

    in_flight: int
    tps: float
    client_us_per_call: float
    server_us_per_call: float
    client_busy: float
    server_busy: float


async def where_time_goes(n: int, levels: tuple[int, ...] = (1, 64), serializer: str = "pickle",
                          pin: bool = False, fastpath: bool = True) -> list[CpuShare]:
    """Measure the CPU that each side spends per call, and how busy each side is.

    If both sides are far from 100 % busy, the calls are waiting (on wake-ups, on the other side)
    rather than computing: the limit is the round trip, not Python's speed. If one side is at
    100 %, its CPU per call is the limit.

    Args:
        fastpath: False runs client and server without the hot path (:mod:`stages.v2_1.fastpath`),
            with v2.0's plain pieces, to measure what it buys.
    """
    shares = []
    plain = () if fastpath else ("--plain",)
    with placement(cpu_split() if pin else None) as server, server("stages.v2_1", plain) as proc:
        client = Client(proc.host, proc.port, ClientConfig(fastpath=fastpath))
        users = client.async_proxy(UserApi, serializer=serializer)
        for _ in range(default_warmup(n) or 1):
            await users.get_user(1)
        for level in levels:
            async def worker(calls: int) -> None:
                for _ in range(calls):
                    await users.get_user(123456)

            per_worker = max(1, n // level)
            server0, client0, start = cpu_seconds(proc.pid), cpu_seconds(), time.perf_counter()
            await asyncio.gather(*(worker(per_worker) for _ in range(level)))
            elapsed = time.perf_counter() - start
            calls = per_worker * level
            server_cpu, client_cpu = cpu_seconds(proc.pid) - server0, cpu_seconds() - client0
            shares.append(CpuShare(level, calls / elapsed, 1e6 * client_cpu / calls,
                                   1e6 * server_cpu / calls, client_cpu / elapsed,
                                   server_cpu / elapsed))
        await client.aclose()
    return shares


@rpc_api(namespace="bench")
class PathsApi(abc.ABC):
    """Three methods that do nothing, one for each way a v2.1 server runs a method."""

    @abc.abstractmethod
    def inline(self) -> int:
        """Bound with ``inline=``: runs on the event loop."""

    @abc.abstractmethod
    def thread(self) -> int:
        """A plain method: runs in the server's thread pool."""

    @abc.abstractmethod
    def task(self) -> int:
        """Implemented as a coroutine: runs as its own task."""


class PathsImpl(PathsApi):
    def inline(self) -> int:
        return 1

    def thread(self) -> int:
        return 1

    async def task(self) -> int:  # type: ignore[override]
        return 1


@dataclass(frozen=True)
class PathCost:
    """What calls of one path cost: one at a time, and with 64 in flight."""

    run: Run
    p50_us: float
    tps_64: float

    @property
    def us_per_call_64(self) -> float:
        """Microseconds per call with 64 in flight (the inverse of the throughput)."""
        return 1e6 / self.tps_64


async def dispatch_paths(n: int, serializer: str = "pickle") -> list[PathCost]:
    """Measure each way of running a method (:class:`Run`), in this process.

    One at a time, the paths take turns call by call (inline, thread, task, inline...): they
    differ by a few microseconds, and a moment of load on a shared machine then falls on all
    three alike instead of on whichever path was being measured.

    Args:
        n: calls measured one at a time per path; four times as many with 64 in flight.
    """
    server = Server()
    server.bind(PathsApi, PathsImpl(), inline=("inline",))
    runs = (Run.INLINE, Run.THREAD, Run.TASK)
    costs = []
    async with server:
        client = Client(*server.address)
        api = client.async_proxy(PathsApi, serializer=serializer)
        calls = [getattr(api, run.value) for run in runs]
        latencies: list[list[float]] = [[] for _ in runs]
        for i in range(n // 10 + n):  # the first tenth warms up, and is left out
            for call, kept in zip(calls, latencies, strict=True):
                start = time.perf_counter()
                await call()
                if i >= n // 10:
                    kept.append(time.perf_counter() - start)
        for run, call, kept in zip(runs, calls, latencies, strict=True):
            many = await measure_closed_loop(call, 4 * n, 64, label=f"{run.value} 64 in flight")
            costs.append(PathCost(run, statistics.median(kept) * 1e6, many.tps))
        await client.aclose()
    return costs


@dataclass(frozen=True)
class Gain:
    """What one step of the hot path saves: microseconds per use, plain and fast."""

    step: str
    side: str
    plain_us: float
    fast_us: float

    @property
    def saved_us(self) -> float:
        return self.plain_us - self.fast_us


def fastpath_gains(rounds: int = 20_000) -> list[Gain]:
    """Each step of :mod:`stages.v2_1.fastpath` against the plain piece it replaces, on one
    ``get_user(123456)`` call: the best of five timings of ``rounds`` uses each."""
    spec = api_spec(UserApi)
    registry = TypeRegistry.of([spec])
    plain, fast = PickleSerializer(registry), hot.RecordPickleSerializer(registry)
    plain_method, fast_method = spec.methods["get_user"], hot.quick_spec(spec).methods["get_user"]
    answer = Outcome(User(123456, "Alan Turing", "alan.123456@example.org"))
    plain_answer, fast_answer = plain.encode_outcome(answer), fast.encode_outcome(answer)

    def us(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6

    return [
        Gain("argument check (QuickMethodSpec)", "each",
             us(lambda: plain_method.check_arguments((123456,), {})),
             us(lambda: fast_method.check_arguments((123456,), {}))),
        Gain("encode the answer (record)", "server",
             us(lambda: plain.encode_outcome(answer)), us(lambda: fast.encode_outcome(answer))),
        Gain("decode the answer (record)", "client",
             us(lambda: plain.decode_outcome(plain_answer)),
             us(lambda: fast.decode_outcome(fast_answer))),
    ]


@dataclass(frozen=True)
class RouteCost:
    """The p50 latency of a blocking proxy's call, one at a time, by route (medians of rounds).

    Attributes:
        direct_us: the call made in the calling thread, on a connection it owns meanwhile
            (:mod:`stages.v2_1.blocking`).
        handed_over_us: the call handed to the client's loop thread and back
            (``ClientConfig(direct_connections=0)``).
        socket_us: a plain blocking socket against the bare asyncio echo, the floor.
    """

    direct_us: float
    handed_over_us: float
    socket_us: float


def blocking_routes(n: int, rounds: int = 3) -> RouteCost:
    """Measure both routes of the blocking proxy and the floor, ``rounds`` times interleaved,
    each round ``n`` calls one at a time after a warm-up (blocking: run it in a thread when an
    event loop runs here)."""
    found: dict[str, list[float]] = {"direct": [], "handed over": [], "socket": []}
    with ServerProcess("stages.v2_1") as server, \
            ServerProcess("stages.harness.peers.echo_peer") as echo, \
            Client(server.host, server.port) as direct, \
            Client(server.host, server.port, ClientConfig(direct_connections=0)) as handed:
        proxies = {"direct": direct.proxy(UserApi), "handed over": handed.proxy(UserApi)}
        with socket_to_echo(echo.host, echo.port) as plain:
            for _ in range(rounds):
                for route, users in proxies.items():
                    found[route].append(measure_blocking(partial(users.get_user, 123456), n,
                                                         route).p50 * 1e6)
                found["socket"].append(measure_blocking(plain, n, "socket").p50 * 1e6)
    return RouteCost(*(statistics.median(found[k]) for k in ("direct", "handed over", "socket")))


@contextlib.contextmanager
def socket_to_echo(host: str, port: int) -> Iterator[Callable[[], bytes]]:
    """A call of 100 bytes there and back on a plain blocking socket to the bare echo."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield blocking_call(sock, SMALL_BODY)
