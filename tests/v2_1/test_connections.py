"""v2.1 on loopback: many calls on one connection, order, deadlines, push back, pings, shutdown."""

from __future__ import annotations

import abc
import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import run, until

from stages.v1_0.protocol import HEADER, MAGIC
from stages.v2_0.user_stub import InventoryApi, User, UserApi
from stages.v2_1 import (
    Client,
    ClientConfig,
    ConnectionClosedError,
    Frame,
    FrameCodec,
    FrameType,
    GoAway,
    RpcTimeoutError,
    Server,
    ServerConfig,
    Status,
    TransportError,
    rpc_api,
    rpc_timeout,
)
from stages.v2_1.cli import new_server
from stages.v2_1.timer_stub import TimerApi


@asynccontextmanager
async def serving(server: Server | None = None, **client: Any) -> AsyncIterator[tuple[Server, Client]]:
    server = server or new_server()
    async with server:
        c = Client(*server.address, ClientConfig(**client))
        try:
            yield server, c
        finally:
            await c.aclose()


def test_ten_thousand_calls_in_flight_on_one_connection_each_get_their_own_answer() -> None:
    async def scenario() -> None:
        async with serving() as (server, client):
            echo = client.async_proxy(InventoryApi).echo

            async def caller(task: int) -> list[Any]:
                return await asyncio.gather(*(echo((task, i, f"payload-{task}-{i}"))
                                              for i in range(100)))

            results = await asyncio.gather(*(caller(t) for t in range(100)))
            for task, answers in enumerate(results):
                assert answers == [(task, i, f"payload-{task}-{i}") for i in range(100)]
            assert client.connects == 1 and server.connection_count == 1
            assert client.connection is not None and client.connection.pending == {}

    run(scenario)


def test_a_slow_call_does_not_hold_up_fast_ones_and_answers_come_back_out_of_order() -> None:
    async def scenario() -> None:
        async with serving() as (_, client):
            timer = client.async_proxy(TimerApi)
            users = client.async_proxy(UserApi)
            order: list[str] = []

            async def tagged(name: str, coro: Awaitable[Any]) -> None:
                await coro
                order.append(name)

            await asyncio.gather(tagged("slow", timer.sleep(0.3)), tagged("fast-user", users.get_user(1)),
                                 tagged("medium", timer.sleep(0.1)))
            assert order == ["fast-user", "medium", "slow"]

    run(scenario)


def test_deadline_fails_the_call_at_once_and_the_late_answer_is_dropped() -> None:
    async def scenario() -> None:
        async with serving(timeout=5.0) as (_, client):
            timer = client.async_proxy(TimerApi)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with rpc_timeout(0.1):
                with pytest.raises(RpcTimeoutError, match="within 0.1 s"):
                    await timer.sleep(0.3)
            assert 0.09 <= loop.time() - start < 0.25
            conn = client.connection
            assert conn is not None
            await until(lambda: conn.late_answers == 1)  # it came, and was dropped
            assert (await client.async_proxy(UserApi).get_user(3)).id == 3
            assert client.connects == 1
            quick = client.async_proxy(TimerApi, timeout=0.05)  # per proxy
            with pytest.raises(RpcTimeoutError):
                await quick.sleep(0.2)

    run(scenario)


def test_blocking_proxy_with_per_call_timeout() -> None:
    async def scenario() -> None:
        server = new_server()
        async with server:
            def blocking() -> None:
                with Client(*server.address) as client:
                    users = client.proxy(UserApi)
                    assert users.get_user(5) == User(5, "Ada Lovelace", "ada.5@example.org")
                    with rpc_timeout(0.05), pytest.raises(RpcTimeoutError):
                        client.proxy(TimerApi).sleep(0.5)
                    assert users.get_user(6).id == 6
            await asyncio.to_thread(blocking)

    run(scenario)


@rpc_api(namespace="tests")
class CounterApi(abc.ABC):
    @abc.abstractmethod
    def hold(self, seconds: float) -> int: ...


class Counter(CounterApi):
    def __init__(self) -> None:
        self.now = self.peak = 0

    async def hold(self, seconds: float) -> int:  # type: ignore[override]
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
            return self.now
        finally:
            self.now -= 1


def test_the_server_bounds_calls_in_flight_per_connection_and_pushes_back() -> None:
    async def scenario() -> None:
        counter = Counter()
        server = Server(ServerConfig(max_concurrent_calls=4))
        server.bind(CounterApi, counter)
        async with serving(server) as (_, client):
            api = client.async_proxy(CounterApi)
            results = await asyncio.gather(*(api.hold(0.05) for _ in range(40)))
            assert len(results) == 40 and max(results) <= 4
            assert counter.peak == 4

    run(scenario)


def test_a_client_that_pings_too_often_is_told_so_and_cut_off() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(min_ping_interval=1.0, max_ping_strikes=2))
        async with serving(server, heartbeat_interval=0.02, idle_timeout=1.0) as (_, client):
            assert (await client.async_proxy(UserApi).get_user(1)).id == 1
            conn = client.connection
            assert conn is not None
            await asyncio.wait_for(conn.closed, 5)
            assert conn.goaway is GoAway.TOO_MANY_PINGS
            assert client.endpoint.heartbeat_interval == 0.04  # the client backs off, as gRPC's does
            assert (await client.async_proxy(UserApi).get_user(2)).id == 2

    run(scenario)


def test_a_well_behaved_idle_client_is_never_cut_off() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(min_ping_interval=0.05, idle_timeout=0.5))
        async with serving(server, heartbeat_interval=0.1, idle_timeout=0.3) as (_, client):
            users = client.async_proxy(UserApi)
            await users.get_user(1)
            conn = client.connection
            assert conn is not None
            await asyncio.sleep(1.5)  # idle for 3 server idle timeouts: only pings keep it open
            assert conn.usable and conn.goaway is None
            await users.get_user(2)
            assert client.connects == 1 and server.connection_count == 1

    run(scenario)


def test_graceful_shutdown_finishes_calls_in_flight_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(shutdown_grace=5.0))
        async with server:
            client = Client(*server.address, ClientConfig(backoff_initial=10.0))
            timer = client.async_proxy(TimerApi)
            await timer.sleep(0)
            in_flight = asyncio.ensure_future(timer.sleep(0.3))
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await server.aclose()
            assert 0.2 < loop.time() - start < 2.0  # it waited for the call in flight
            assert await in_flight > 0
            assert client.connection is not None and client.connection.goaway is GoAway.SHUTDOWN
            with pytest.raises(TransportError):
                await timer.sleep(0)
            with pytest.raises(TransportError, match="next connection attempt"):
                await timer.sleep(0)  # backing off: fails fast without trying
            await client.aclose()
            assert server.connection_count == 0

    run(scenario)


def test_shutdown_cancels_calls_that_outlive_the_grace_period() -> None:
    async def scenario() -> None:
        async with serving(new_server(ServerConfig(shutdown_grace=0.1))) as (server, client):
            stuck = asyncio.ensure_future(client.async_proxy(TimerApi).sleep(30))
            await until(lambda: any(c.running for c in server.connections))
            await server.aclose()
            with pytest.raises(ConnectionClosedError):
                await stuck

    run(scenario)


def test_requests_after_goaway_are_refused_unrun() -> None:
    async def scenario() -> None:
        async with serving() as (server, client):
            await client.async_proxy(UserApi).get_user(1)
            [conn] = server.connections
            conn.going_away = True  # as after GOAWAY, before the client has read it
            frame = await client.exchange(Frame(FrameType.REQUEST, 99, b"", codec=2))
            assert frame.status == Status.UNAVAILABLE and b"not run" in frame.body

    run(scenario)


def raw_connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    return sock


def read_until_closed(sock: socket.socket) -> list[Frame]:
    codec = FrameCodec()
    while data := sock.recv(65536):
        codec.feed(data)
    sock.close()
    return list(codec.frames())


@pytest.mark.parametrize("payload, status", [
    (b"\x00" * 32, Status.PROTOCOL_ERROR),
    (HEADER.pack(MAGIC, 1, 1, 0, 0, 0, 5, 0xFFFFFFFF), Status.TOO_LARGE),
    (HEADER.pack(MAGIC, 1, 2, 0, 0, 0, 5, 0), Status.PROTOCOL_ERROR),  # a RESPONSE sent to a server
])
def test_bad_frames_close_only_their_connection(payload: bytes, status: Status) -> None:
    async def scenario() -> None:
        async with serving() as (server, client):
            users = client.async_proxy(UserApi)
            await users.get_user(1)
            sock = raw_connect(server.address)
            sock.sendall(payload)
            frames = await asyncio.to_thread(read_until_closed, sock)
            assert frames[-1].status == status
            assert (await users.get_user(2)).id == 2
            await until(lambda: server.connection_count == 1)

    run(scenario)


def test_a_trickled_frame_is_cut_off_after_frame_timeout() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(frame_timeout=0.3, idle_timeout=10))
        async with server:
            reader, writer = await asyncio.open_connection(*server.address)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(100):  # a byte every 20 ms keeps the connection busy but never done
                writer.write(b"R")
                await asyncio.sleep(0.02)
                if writer.transport.is_closing() or reader.at_eof():
                    break
            assert await reader.read() == b""
            assert 0.25 < loop.time() - start < 3
            writer.close()
            await writer.wait_closed()

    run(scenario)


def test_connection_refused_then_backoff_grows_with_jitter() -> None:
    async def scenario() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = Client("127.0.0.1", port, ClientConfig(backoff_initial=0.05, backoff_max=0.2,
                                                        backoff_jitter=0.2))
        users = client.async_proxy(UserApi)
        loop = asyncio.get_running_loop()
        waits = []
        for _ in range(4):
            with pytest.raises(TransportError, match="cannot connect"):
                await users.get_user(1)
            waits.append(client.endpoint._next_attempt - loop.time())
            await until(lambda: loop.time() >= client.endpoint._next_attempt)
        assert 0.03 < waits[0] < 0.07 and 0.07 < waits[1] < 0.13
        assert all(w <= 0.25 for w in waits)

    run(scenario)


def test_blocking_proxy_falls_back_to_reconnecting_when_its_connection_is_gone() -> None:
    from stages.harness.ports import free_port
    from stages.harness.process import ServerProcess

    port = free_port()
    with Client("127.0.0.1", port, ClientConfig(backoff_initial=0.01)) as client:
        users = client.proxy(UserApi)
        with ServerProcess("stages.v2_1", ["--port", str(port)]):
            assert users.get_user(1).id == 1
            assert client.direct.connects == 1  # a connection of its own (see v2_1.blocking)
        with pytest.raises((ConnectionClosedError, TransportError)):
            users.get_user(2)  # the server is gone: the call fails, it does not hang
        with ServerProcess("stages.v2_1", ["--port", str(port)]):
            deadline = time.monotonic() + 10
            while True:  # the client backs off between attempts; retry until it connects
                try:
                    assert users.get_user(3).id == 3
                    break
                except TransportError:
                    assert time.monotonic() < deadline
            # One new connection: a direct one, or (while direct ones are refused, for
            # backoff_max after a failed attempt) the loop's, which backs off between attempts.
            assert client.direct.connects + client.connects == 2
