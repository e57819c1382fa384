"""Tests for ``stages.harness.faultproxy``: real loopback sockets, a tiny echo server upstream.

Nothing here sleeps and hopes. Waits are on conditions with deadlines (``eventually``,
``wait_connections``, reads under ``wait_for``). Lower bounds on time are causal: the proxy
never forwards a chunk before ``arrival + latency`` on the loop clock, and a chunk cannot
arrive before the client wrote it. The two upper bounds (pipelining, heal releasing delayed
chunks) have margins of several times the expected value.
"""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from types import TracebackType
from typing import Any, Self

import pytest

from stages.harness.faultproxy import (
    BUFFER_LIMIT,
    PACING_INTERVAL,
    READ_CHUNK,
    DirectionStats,
    FaultProxy,
    FaultProxyThread,
    Faults,
    LinkFaults,
)
from stages.harness.ports import free_port

DEADLINE = 2.0
"""Seconds any single expected event may take; generous, only reached when a test fails."""

SILENCE = 0.3
"""Seconds of silence that count as "nothing arrives" through a blackhole."""

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(scenario: Coroutine[Any, Any, None], timeout: float = 8.0) -> None:
    """Run one async scenario on a fresh loop, failing (not hanging) past ``timeout``."""
    asyncio.run(asyncio.wait_for(scenario, timeout))


async def eventually(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds.

    Raises:
        AssertionError: If it still does not hold after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.005)


class EchoServer:
    """An asyncio echo server that also counts how its connections ended.

    It echoes until EOF, then closes (so a half-close from the client ends the connection).
    Every handler task is its own and is finished in ``__aexit__``.

    Args:
        stalled: Accept connections but never read from them (a server stuck in a long GC
            pause or a busy loop), to show back-pressure.
    """

    def __init__(self, *, stalled: bool = False) -> None:
        self.stalled = stalled
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()
        self.address: tuple[str, int] = ("", 0)
        self.received = 0
        self.live = 0
        self.eofs = 0
        self.resets = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._stopping.set()
        # The proxy has closed its side by now; let the handlers see it and finish.
        with suppress(AssertionError):
            await eventually(lambda: not self._tasks)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def reset_all(self) -> None:
        """Abort every connection with RST (SO_LINGER 0), as a crashing server's kernel would."""
        for writer in self._writers:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.live += 1  # counted here, synchronously, so a cancelled task cannot miss it
        task = asyncio.ensure_future(self._echo(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.stalled:
                await self._stopping.wait()
                return
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
            self.eofs += 1
        except ConnectionResetError:
            self.resets += 1
        finally:
            self._writers.discard(writer)
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
            self.live -= 1


@asynccontextmanager
async def client(address: tuple[str, int]) -> AsyncIterator[Stream]:
    """A loopback client connection, closed (and its socket released) on exit."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


@asynccontextmanager
async def echo_and_proxy() -> AsyncIterator[tuple[EchoServer, FaultProxy]]:
    """An echo server with a FaultProxy in front of it."""
    async with EchoServer() as echo, FaultProxy(echo.address) as proxy:
        yield echo, proxy


async def round_trip(stream: Stream, payload: bytes, timeout: float = DEADLINE) -> bytes:
    """Send ``payload`` and read back as many bytes, writing and reading concurrently."""
    reader, writer = stream

    async def send() -> None:
        writer.write(payload)
        await writer.drain()

    _, echoed = await asyncio.wait_for(
        asyncio.gather(send(), reader.readexactly(len(payload))), timeout)
    return echoed


async def assert_silent(reader: asyncio.StreamReader) -> None:
    """Assert that nothing (not even EOF) arrives for :data:`SILENCE` seconds."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), SILENCE)


# --------------------------------------------------------------------------------------------
# Pass-through
# --------------------------------------------------------------------------------------------


def test_passes_bytes_unchanged_both_ways() -> None:
    big = os.urandom(1024 * 1024)

    async def scenario() -> None:
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as stream:
            assert await round_trip(stream, b"hello") == b"hello"
            assert await round_trip(stream, big, timeout=5.0) == big
            total = len(big) + 5
            assert proxy.stats.upstream == DirectionStats(total, total, 0)
            assert proxy.stats.downstream == DirectionStats(total, total, 0)
            assert proxy.stats.accepted == 1
            assert proxy.connection_count == 1

    run(scenario())


def test_half_close_is_forwarded_and_the_link_then_ends() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as (reader, writer):
            writer.write(b"last words")
            writer.write_eof()
            # The echo server sees EOF only if the proxy forwarded it; it then echoes and
            # closes, and that EOF must come back through the proxy too.
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b"last words"
            await proxy.wait_connections(0, timeout=DEADLINE)
            assert echo.eofs == 1

    run(scenario())


def test_a_client_closing_ends_its_link() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy):
            async with client(proxy.address) as stream:
                await round_trip(stream, b"x")
                assert proxy.connection_count == 1
            await proxy.wait_connections(0, timeout=DEADLINE)
            await eventually(lambda: echo.live == 0)

    run(scenario())


def test_an_upstream_reset_reaches_the_client_as_a_reset() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as (reader, writer):
            await round_trip((reader, writer), b"x")
            echo.reset_all()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), DEADLINE)
            await proxy.wait_connections(0, timeout=DEADLINE)

    run(scenario())


def test_a_server_that_stops_reading_blocks_the_sender() -> None:
    chunk = b"\0" * (1024 * 1024)

    async def scenario() -> None:
        async with EchoServer(stalled=True) as echo, FaultProxy(echo.address) as proxy, \
                client(proxy.address) as (_, writer):
            sent = 0
            while True:  # fill every buffer on the way until the sender's drain() blocks
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), SILENCE)
                except TimeoutError:
                    break
                sent += len(chunk)
                assert sent < 512 * len(chunk), "the proxy buffers without limit"
            # What the proxy holds itself stays within its limit (plus the chunk in hand);
            # the rest sits in kernel buffers, as on a real link.
            upstream = proxy.stats.upstream
            assert upstream.received - upstream.forwarded <= BUFFER_LIMIT + READ_CHUNK
            await proxy.reset()  # a clean close would wait for the stalled server to read

    run(scenario())


def test_unreachable_upstream_closes_the_client() -> None:
    async def scenario() -> None:
        async with FaultProxy(("127.0.0.1", free_port())) as proxy:
            async with client(proxy.address) as (reader, _):
                assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            await proxy.wait_connections(0, timeout=DEADLINE)
            assert proxy.stats.upstream_failures == 1

    run(scenario())


# --------------------------------------------------------------------------------------------
# Latency and bandwidth
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("direction", "legs"), [("both", 2), ("upstream", 1), ("downstream", 1)])
def test_latency_adds_to_the_round_trip_and_keeps_order(direction: str, legs: int) -> None:
    latency = 0.1
    messages = [f"<{i}>".encode() for i in range(20)]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as stream:
            proxy.set_latency(latency, direction=direction)  # type: ignore[arg-type]
            started = loop.time()
            assert await round_trip(stream, b"ping") == b"ping"
            assert loop.time() - started >= legs * latency

            reader, writer = stream
            for message in messages:  # several writes, so several chunks in the queue
                writer.write(message)
                await writer.drain()
            expected = b"".join(messages)
            assert await asyncio.wait_for(reader.readexactly(len(expected)), DEADLINE) == expected

    run(scenario())


def test_latency_is_pipelined_not_serialized() -> None:
    latency, count, gap = 0.2, 5, 0.05

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as (reader, writer):
            proxy.set_latency(latency, direction="upstream")
            started = loop.time()
            sent: list[float] = []
            for i in range(count):
                sent.append(loop.time())
                writer.write(bytes([i]))
                await writer.drain()
                await asyncio.sleep(gap)  # pacing the writes, so each one is its own chunk
            for i in range(count):
                assert await asyncio.wait_for(reader.readexactly(1), DEADLINE) == bytes([i])
                assert loop.time() - sent[i] >= latency
            # Expected ~ count * gap + latency = 0.45 s; one delay per chunk in turn would
            # take at least count * latency = 1.0 s.
            assert loop.time() - started < count * latency

    run(scenario())


def test_latency_change_applies_to_queued_chunks_without_reordering() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as (reader, writer):
            proxy.set_latency(5.0, direction="upstream")
            started = loop.time()
            writer.write(b"first")
            await eventually(lambda: proxy.stats.upstream.received == 5)
            proxy.heal()
            writer.write(b"second")
            data = await asyncio.wait_for(reader.readexactly(11), DEADLINE)
            assert data == b"firstsecond"
            assert loop.time() - started < 2.5  # "first" was released, not held for 5 s

    run(scenario())


def test_faults_apply_to_future_links() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with echo_and_proxy() as (_, proxy):
            proxy.set_latency(0.1, direction="downstream")
            async with client(proxy.address) as stream:
                started = loop.time()
                assert await round_trip(stream, b"late") == b"late"
                assert loop.time() - started >= 0.1

    run(scenario())


def test_bandwidth_limits_throughput() -> None:
    rate, size = 100_000, 30_000

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as stream:
            proxy.set_bandwidth(rate, direction="downstream")
            started = loop.time()
            assert await round_trip(stream, b"b" * size) == b"b" * size
            # The first slice may leave at once; every later byte waits for its share.
            assert loop.time() - started >= size / rate - PACING_INTERVAL
            proxy.set_bandwidth(None)
            assert proxy.faults == Faults()

    run(scenario())


# --------------------------------------------------------------------------------------------
# Blackhole
# --------------------------------------------------------------------------------------------


def test_blackhole_swallows_then_heal_forwards_only_new_bytes() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as stream:
            reader, writer = stream
            assert await round_trip(stream, b"alive") == b"alive"
            proxy.blackhole()
            writer.write(b"lost")
            await asyncio.wait_for(writer.drain(), DEADLINE)  # the write itself succeeds
            await assert_silent(reader)
            await eventually(lambda: proxy.stats.upstream.swallowed == 4)
            assert echo.received == 5  # nothing reached the server

            proxy.heal()
            assert await round_trip(stream, b"back") == b"back"  # not b"lostback"
            assert proxy.connection_count == 1

    run(scenario())


def test_blackhole_keeps_reading_so_the_sender_never_blocks() -> None:
    flood = b"\0" * (16 * 1024 * 1024)  # far more than loopback socket buffers hold

    async def scenario() -> None:
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as stream:
            await round_trip(stream, b"x")
            proxy.blackhole()
            _, writer = stream
            writer.write(flood)
            await asyncio.wait_for(writer.drain(), 5.0)
            await eventually(lambda: proxy.stats.upstream.swallowed == len(flood))

    run(scenario())


def test_blackhole_downstream_only_reaches_the_server_but_not_the_client() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as stream:
            reader, writer = stream
            await round_trip(stream, b"x")
            proxy.blackhole("downstream")
            writer.write(b"one-way")
            await eventually(lambda: echo.received == 1 + 7)
            await assert_silent(reader)
            await eventually(lambda: proxy.stats.downstream.swallowed == 7)

    run(scenario())


def test_drop_blackholes_both_ways_for_new_links_too() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy):
            proxy.drop()
            expected = LinkFaults(blackhole=True)
            assert proxy.faults == Faults(upstream=expected, downstream=expected)
            async with client(proxy.address) as (reader, writer):
                writer.write(b"anyone?")
                await assert_silent(reader)
                assert echo.received == 0
                proxy.heal()
                assert await round_trip((reader, writer), b"yes") == b"yes"

    run(scenario())


def test_eof_during_blackhole_is_held_until_heal() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as (reader, writer):
            await round_trip((reader, writer), b"x")
            proxy.blackhole("upstream")
            writer.write_eof()
            await assert_silent(reader)
            assert echo.eofs == 0 and proxy.connection_count == 1
            proxy.heal()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            await proxy.wait_connections(0, timeout=DEADLINE)
            assert echo.eofs == 1

    run(scenario())


# --------------------------------------------------------------------------------------------
# Breaking links
# --------------------------------------------------------------------------------------------


def test_cut_sends_eof_to_both_ends() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy):
            async with client(proxy.address) as stream:
                await round_trip(stream, b"x")
                await proxy.cut()
                assert proxy.connection_count == 0
                assert await asyncio.wait_for(stream[0].read(), DEADLINE) == b""
                await eventually(lambda: echo.eofs == 1)
            async with client(proxy.address) as stream:  # the proxy itself still serves
                assert await round_trip(stream, b"y") == b"y"

    run(scenario())


def test_cut_counts_delayed_bytes_as_swallowed() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as (_, writer):
            proxy.set_latency(5.0, direction="upstream")
            writer.write(b"z" * 100)
            await eventually(lambda: proxy.stats.upstream.received == 100)
            await proxy.cut()
            assert proxy.stats.upstream == DirectionStats(100, 0, 100)
            assert echo.received == 0

    run(scenario())


def test_reset_sends_rst_to_both_ends() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (echo, proxy), client(proxy.address) as stream:
            await round_trip(stream, b"x")
            await proxy.reset()
            assert proxy.connection_count == 0
            # Linux reports the RST as ECONNRESET on the next read, not as EOF.
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(stream[0].read(), DEADLINE)
            await eventually(lambda: echo.resets == 1)

    run(scenario())


def test_cut_right_after_connect_needs_wait_connections() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as (reader, _):
            # connect() returned when the kernel finished the handshake; the proxy may not
            # have the link yet. Waiting for it makes the cut below certain to hit.
            await proxy.wait_connections(1, timeout=DEADLINE)
            await proxy.cut()
            assert await asyncio.wait_for(reader.read(), DEADLINE) == b""

    run(scenario())


def test_refuse_new_closes_new_connections_but_keeps_live_ones() -> None:
    async def scenario() -> None:
        async with echo_and_proxy() as (_, proxy), client(proxy.address) as old:
            await round_trip(old, b"before")
            proxy.refuse_new()
            async with client(proxy.address) as (reader, _):
                assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
            assert await round_trip(old, b"still here") == b"still here"
            assert proxy.stats.refused == 1 and proxy.connection_count == 1

            proxy.refuse_new(False)
            async with client(proxy.address) as new:
                assert await round_trip(new, b"welcome") == b"welcome"

    run(scenario())


def test_aclose_closes_every_link() -> None:
    async def scenario() -> None:
        async with EchoServer() as echo:
            proxy = FaultProxy(echo.address)
            await proxy.start()
            async with client(proxy.address) as a, client(proxy.address) as b, \
                    client(proxy.address) as c:
                for stream in (a, b, c):
                    await round_trip(stream, b"x")
                proxy.set_latency(5.0)  # pumps asleep on a deadline must stop too
                await proxy.aclose()
                assert proxy.connection_count == 0
                for reader, _ in (a, b, c):
                    assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
                await eventually(lambda: echo.live == 0)
                with pytest.raises(ConnectionRefusedError):
                    await asyncio.open_connection(*proxy.address)
            await proxy.aclose()  # idempotent

    run(scenario())


def test_start_twice_and_address_before_start_are_errors() -> None:
    async def scenario() -> None:
        proxy = FaultProxy(("127.0.0.1", 9))
        with pytest.raises(RuntimeError):
            proxy.address
        await proxy.start()
        try:
            with pytest.raises(RuntimeError):
                await proxy.start()
        finally:
            await proxy.aclose()

    run(scenario())


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.set_latency(-0.1),
        lambda p: p.set_latency(float("nan")),
        lambda p: p.set_bandwidth(0),
        lambda p: p.set_bandwidth(1.5),
        lambda p: p.blackhole("sideways"),
        lambda p: p.set_latency(0.1, direction="up"),
    ],
)
def test_bad_fault_values_are_rejected_and_change_nothing(
    change: Callable[[FaultProxy], None],
) -> None:
    proxy = FaultProxy(("127.0.0.1", 9))  # never started: settings need no loop
    with pytest.raises(ValueError):
        change(proxy)
    assert proxy.faults == Faults()


# --------------------------------------------------------------------------------------------
# The threaded wrapper, from blocking code
# --------------------------------------------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with suppress(ConnectionResetError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@contextmanager
def sync_echo_server() -> Iterator[tuple[str, int]]:
    """A threaded blocking echo server; joins its handler threads on exit."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.block_on_close = True  # server_close() joins the handlers: no thread outlives us
    # A short poll interval: shutdown() waits for the serving loop's next poll.
    loop = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    loop.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        server.shutdown()
        server.server_close()
        loop.join()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes from a blocking socket (its timeout applies per recv)."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError(f"EOF after {len(chunks)} of {size} bytes")
        chunks += chunk
    return bytes(chunks)


def test_fault_proxy_thread_from_plain_sockets() -> None:
    with sync_echo_server() as upstream, FaultProxyThread(upstream) as proxy:
        with socket.create_connection(proxy.address, timeout=DEADLINE) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
            assert proxy.connection_count == 1

            proxy.set_latency(0.1)
            started = time.monotonic()  # the loop's clock, so the bound is causal
            sock.sendall(b"slow")
            assert recv_exactly(sock, 4) == b"slow"
            assert time.monotonic() - started >= 0.2
            proxy.heal()

            proxy.blackhole()
            sock.sendall(b"lost")
            sock.settimeout(SILENCE)
            with pytest.raises(TimeoutError):
                sock.recv(1)
            sock.settimeout(DEADLINE)
            proxy.heal()
            sock.sendall(b"back")
            assert recv_exactly(sock, 4) == b"back"
            assert proxy.stats.upstream.swallowed == 4

            proxy.cut()
            assert sock.recv(1) == b""

        with socket.create_connection(proxy.address, timeout=DEADLINE) as sock:
            proxy.wait_connections(1)
            proxy.reset()
            with pytest.raises(ConnectionResetError):
                sock.recv(1)

        proxy.refuse_new()
        with socket.create_connection(proxy.address, timeout=DEADLINE) as sock:
            assert sock.recv(1) == b""
        assert proxy.stats.refused == 1

    assert not [t for t in threading.enumerate() if t.name.startswith("FaultProxy->")]
    with pytest.raises(RuntimeError):
        proxy.connection_count  # stopped


def test_fault_proxy_thread_reports_a_failed_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy = FaultProxyThread(("127.0.0.1", 9), port=taken.getsockname()[1])
        with pytest.raises(OSError):
            proxy.start()
    proxy.stop()  # idempotent after a failed start
