"""The registry of systems: what is measured, how its server starts, how its client calls.

A *system* is one server and one way of calling it. Every system runs the same workloads
(:mod:`benchmarks.workloads`) in the same run:

==================  ======================================================================
id                  what
==================  ======================================================================
echo                the bare asyncio length-prefixed echo: the ceiling of an asyncio RPC
echo-socket         a plain blocking socket client against that echo (the blocking proxies'
                    reference)
v1_0 … v2_1         each stage's demo server and its async proxy (v1.0: its request line)
v2_1-blocking       v2.1's blocking proxy
v3_x                v3.x with every governance feature on: the provider registered in
                    ZooKeeper, discovered by the consumer, p2c balancing with outlier
                    detection, circuit breakers, metrics on both sides
v3_x-blocking       the same, through the blocking proxy
*-uvloop            the same system with uvloop for the server's loop and the client's
grpc-aio            gRPC's asyncio API (``grpc.aio``), both sides
grpc-sync           gRPC's blocking API (``grpcio``), both sides
pyro5, rpyc         the Python RPCs a user might pick instead
==================  ======================================================================

How calls get in flight: an async system runs ``N`` tasks on the measuring process's event loop;
a blocking one runs ``N`` threads (see :mod:`benchmarks.clients` for which share a connection).

A system needs some modules (``requires``): when one is missing, the system is reported as not
run, with the reason, and the suite goes on.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from benchmarks import clients

__all__ = ["ECHO", "GRPC_AIO", "SYSTEMS", "System", "select"]

ECHO: Final = "echo"
"""The ceiling every ratio is taken to."""

GRPC_AIO: Final = "grpc-aio"
"""The industrial baseline every ratio is also taken to."""

SERVERS: Final = "benchmarks.servers"
"""The module that runs every server of the suite but gRPC's asyncio one."""


@dataclass(frozen=True)
class System:
    """One system of the suite.

    Attributes:
        id: short name (the ``--only`` filter matches it; a uvloop variant ends in ``-uvloop``).
        label: the name printed in the table.
        style: ``"async"``: calls in flight are tasks; ``"threads"``: they are threads.
        open: makes a client for a :class:`~benchmarks.clients.Target` (a coroutine function
            for an async system).
        server_module, server_args: the server, run as ``python -m <module> server --host
            127.0.0.1 --port 0 <args>``.
        loop: the event loop of the server and of the async client: ``"asyncio"`` or
            ``"uvloop"``; None for systems with no loop of ours (gRPC's, the blocking peers').
        requires: modules that must be importable.
        zookeeper: the server registers in ZooKeeper and the client discovers it there.
        shared_client: threads only: one client for all threads (else one per thread).
        note: how it calls, one line for the report.
    """

    id: str
    label: str
    style: Literal["async", "threads"]
    open: Callable[[clients.Target], Any]
    server_module: str = SERVERS
    server_args: tuple[str, ...] = ()
    loop: str | None = "asyncio"
    requires: tuple[str, ...] = ()
    zookeeper: bool = False
    shared_client: bool = True
    note: str = ""

    @property
    def threads(self) -> bool:
        """True when calls in flight are threads."""
        return self.style == "threads"

    def missing(self) -> str | None:
        """Why the system cannot run here (a module is not installed), or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return (f"{module} is not installed (pip install -r requirements-bench.lock, "
                        "or pip install -e '.[bench]')")
        return None


def _stage(stage: str, label: str, open_client: Callable[[clients.Target], Any],
           note: str, *, zookeeper: bool = False) -> tuple[System, System]:
    """A stage with its async client, on asyncio's loop and on uvloop."""
    default = System(stage, label, "async", open_client,
                     server_args=("--system", stage), zookeeper=zookeeper, note=note)
    uvloop = System(f"{stage}-uvloop", f"{label} · uvloop", "async", open_client,
                    server_args=("--system", stage, "--loop", "uvloop"), loop="uvloop",
                    requires=("uvloop",), zookeeper=zookeeper, note=note + "; uvloop both sides")
    return default, uvloop


_V10, _V10_UV = _stage("v1_0", "v1.0", clients.V1Async.open, "a connection per call")
_V20, _V20_UV = _stage("v2_0", "v2.0 async proxy", clients.V2Async.open,
                       "async proxy, a connection per call")
_V21, _V21_UV = _stage("v2_1", "v2.1 async proxy", clients.V21Async.open,
                       "async proxy, one multiplexed connection")
_V3, _V3_UV = _stage("v3_x", "v3.x async proxy", clients.V3Async.open,
                     "async proxy; ZooKeeper, p2c, breakers, metrics", zookeeper=True)
_ECHO, _ECHO_UV = _stage("echo", "bare asyncio echo", clients.EchoAsync.open,
                         "length-prefixed echo, answers matched in order (the ceiling)")

SYSTEMS: Final[tuple[System, ...]] = (
    _ECHO,
    _ECHO_UV,
    System("echo-socket", "echo, blocking socket client", "threads", clients.EchoSocket.open,
           server_args=("--system", "echo"), shared_client=False,
           note="sendall + recv_into; a socket per thread"),
    _V10, _V10_UV,
    _V20, _V20_UV,
    _V21, _V21_UV,
    System("v2_1-blocking", "v2.1 blocking proxy", "threads", clients.V21Blocking.open,
           server_args=("--system", "v2_1"),
           note="blocking proxy: calls in the calling thread, one client shared"),
    _V3, _V3_UV,
    System("v3_x-blocking", "v3.x blocking proxy", "threads", clients.V3Blocking.open,
           server_args=("--system", "v3_x"), zookeeper=True,
           note="blocking proxy, as v2.1's; ZooKeeper, p2c, breakers, metrics"),
    System(GRPC_AIO, "grpc.aio", "async", clients.GrpcAio.open,
           server_module="stages.harness.peers.grpc_peer", loop=None, requires=("grpc",),
           note="one channel; async handlers on the server's loop"),
    System("grpc-sync", "grpcio sync", "threads", clients.GrpcSync.open,
           server_args=("--system", "grpc_sync"), loop=None, requires=("grpc",),
           note="one channel shared by the threads; server: a pool of 64 threads"),
    System("pyro5", "Pyro5", "threads", clients.Pyro5Client.open,
           server_args=("--system", "pyro5"), loop=None, requires=("Pyro5",),
           shared_client=False, note="a proxy per thread; serpent; thread pool server"),
    System("rpyc", "RPyC", "threads", clients.RpycClient.open,
           server_args=("--system", "rpyc"), loop=None, requires=("rpyc",),
           shared_client=False, note="a connection per thread; ThreadedServer"),
)


def select(patterns: Sequence[str] | None, systems: Sequence[System] = SYSTEMS) -> list[System]:
    """The systems whose id matches one of the shell-style ``patterns`` (all when None).

    ``v2_1`` selects v2.1's async proxy alone, ``'v2_1*'`` every v2.1 system, ``'*-uvloop'``
    every system on uvloop.

    Raises:
        ValueError: a pattern matches no system (a typo should not silently measure nothing).
    """
    if not patterns:
        return list(systems)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(s.id, pattern) for s in systems):
            known = ", ".join(s.id for s in systems)
            raise ValueError(f"--only {pattern!r} matches no system (known: {known})")
    return [s for s in systems if any(fnmatch.fnmatchcase(s.id, p) for p in patterns)]
