"""Memory that v2.1 holds for calls in flight and for idle connections, against stated bounds.

v3.x puts a registry, a balancer, breakers and metrics on top of v2.1's connections, and a
consumer may have thousands of calls out at once; a provider may keep a thousand consumers
connected while they do nothing. What each costs, measured when these bounds were set (2 cores,
CPython 3.11), and the bound a test holds it to (about twice the measure):

=========================================================  =============  ==============
what                                                       measured       bound
=========================================================  =============  ==============
a v2.1 consumer, per call in flight (10,000 at once)       2.1 KiB        4 KiB
a v3.x consumer with breakers and metrics, per call        3.7 KiB        6 KiB
the same 10,000 calls once cancelled                       2.0 MiB        4 MiB
a v2.1 provider, per idle connection (1,000 at once)       2.7 KiB        16 KiB
=========================================================  =============  ==============

A call in flight is everything that waits for its answer: the caller's task and coroutine
frames, the request's future, its entry in the connection's table and in the deadline heap. The
consumers are measured with ``tracemalloc`` (Python's allocations, exactly), against a peer that
reads every request and answers none. The provider is a process of its own, measured by its
resident memory (``/proc/<pid>/status``, which moves in pages: hence the looser bound).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
from contextlib import ExitStack
from typing import Any

import pytest
from support import run, until

from stages.harness.process import ServerProcess
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig
from stages.v2_1.protocol import PING_FRAME, FrameCodec, FrameType

KIB = 1024
CALLS = 10_000
CONNECTIONS = 1000  # ServerConfig.max_connections: all it takes


class SilentPeer:
    """Reads requests and answers none; counts them."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = FrameCodec()
        while data := await reader.read(65536):
            codec.feed(data)
            self.requests += sum(frame.type == FrameType.REQUEST for frame in codec.frames())
        writer.close()


def v3_consumer(host: str, port: int) -> Any:
    from stages.v3_x import BreakerConfig, StaticRegistry
    from stages.v3_x import Client as V3Client
    from stages.v3_x import ClientConfig as V3Config
    from stages.v3_x.metrics import ClientMetrics

    client = V3Client(StaticRegistry([f"{host}:{port}"]),
                      V3Config(timeout=120, breaker=BreakerConfig()))
    ClientMetrics().attach(client)
    return client


@pytest.mark.parametrize(("stage", "bound"), [("v2_1", 4 * KIB), ("v3_x", 6 * KIB)])
def test_a_consumer_with_10000_calls_in_flight_stays_within_its_bound(stage: str,
                                                                      bound: int) -> None:
    async def scenario() -> None:
        peer = SilentPeer()
        server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        client = (Client(host, port, ClientConfig(timeout=120)) if stage == "v2_1"
                  else v3_consumer(host, port))
        users = client.async_proxy(UserApi)
        # The connection, the proxy and the caches first: they are not per call.
        warm = [asyncio.create_task(users.get_user(i)) for i in range(100)]
        await until(lambda: peer.requests == 100, 10, "the first calls sent")
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            calls = [asyncio.create_task(users.get_user(i)) for i in range(CALLS)]
            await until(lambda: peer.requests == 100 + CALLS, 30, "every call sent")
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - start
            assert held <= CALLS * bound, f"{held / CALLS:.0f} B per call in flight"
            for call in calls + warm:
                call.cancel()
            await asyncio.wait(calls + warm)
            assert all(call.cancelled() for call in calls)
            del calls, warm
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - start
            # Cancelled calls are forgotten at once, not at their deadline two minutes away.
            assert left <= 4 * 1024 * KIB, f"{left / KIB:.0f} KiB left after cancelling"
        finally:
            tracemalloc.stop()
            await client.aclose()
            server.close()

    run(scenario, timeout=120)


def resident(pid: int) -> int:
    """A process's resident memory now, in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def pong(sock: socket.socket) -> None:
    """Send a PING and read its PONG (the socket's timeout bounds the wait)."""
    sock.sendall(PING_FRAME)
    codec = FrameCodec()
    while True:
        data = sock.recv(64)
        assert data, "the server closed the connection"
        codec.feed(data)
        frames = list(codec.frames())
        if frames:
            assert frames[0].type == FrameType.PONG
            return


def open_connections(address: tuple[str, int], count: int,
                     stack: ExitStack) -> list[socket.socket]:
    """``count`` connections that each had a PING answered: the server holds them set up."""
    socks = [stack.enter_context(socket.create_connection(address, timeout=10))
             for _ in range(count)]
    for sock in socks:
        pong(sock)
    return socks


def test_a_provider_holding_1000_idle_connections_stays_within_its_bound() -> None:
    warm = 10
    with ServerProcess("stages.v2_1", ["--idle-timeout", "120"]) as server, \
            ExitStack() as stack:
        address = (server.host, server.port)
        first = open_connections(address, warm, stack)  # what the first ones set up, once
        start = resident(server.pid)
        open_connections(address, CONNECTIONS - warm, stack)
        held = resident(server.pid) - start
        assert held <= (CONNECTIONS - warm) * 16 * KIB, \
            f"{held / (CONNECTIONS - warm) / KIB:.1f} KiB per idle connection"
        pong(first[0])  # held, not dropped: the oldest connection is still served
