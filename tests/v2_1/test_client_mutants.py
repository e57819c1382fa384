"""Tests that kill mutants of ``stages/v2_1/client.py`` which survived ``make mutate``.

A raw asyncio server plays the peer, so that each test decides exactly what comes back: nothing
(the call must time out on its own deadline), a GOAWAY, or a closed connection. What they pin
down: where a timeout is valid, that a proxy's and ``exchange``'s own timeouts are the ones
used, that a lone request leaves at once, that the deadline timer is armed for the next deadline
(not earlier), that a connection told GOAWAY closes when its last call ends, even by timing out,
and what every failed call's exception says.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from support import run, until

from stages.v2_0.serializers import Invocation, PickleSerializer
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig, ConnectionClosedError, Frame, FrameType
from stages.v2_1.client import Endpoint, check_timeout
from stages.v2_1.errors import ConfigError, RpcTimeoutError
from stages.v2_1.protocol import (
    PING_FRAME,
    PONG_FRAME,
    FrameCodec,
    GoAway,
    encode_frame,
    goaway_frame,
)

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]


class Peer:
    """A server that reads requests and answers none; it can say GOAWAY or hang up."""

    def __init__(self) -> None:
        self.requests: list[Frame] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        codec = FrameCodec()
        while data := await reader.read(65536):
            codec.feed(data)
            for frame in codec.frames():
                if frame.type == FrameType.PING:
                    writer.write(PONG_FRAME)
                else:
                    self.requests.append(frame)
        writer.close()

    def say(self, data: bytes) -> None:
        for writer in self.writers:
            writer.write(data)

    def hang_up(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


@asynccontextmanager
async def silent_peer() -> AsyncIterator[tuple[Peer, tuple[str, int]]]:
    peer = Peer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    try:
        async with server:
            yield peer, server.sockets[0].getsockname()[:2]
    finally:
        for writer in peer.writers:
            writer.transport.abort()


def request(rid: int) -> Frame:
    body = PickleSerializer().encode_invocation(Invocation(USERS, "get_user", (rid,), {}))
    return Frame(FrameType.REQUEST, rid, body, codec=2)


# -- timeouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, 0.0, -1, -0.001, math.nan, math.inf, True, "1", None])
def test_a_timeout_must_be_a_finite_number_above_zero(seconds: object) -> None:
    with pytest.raises(ConfigError, match=r"^proxy\(timeout=...\) needs a finite number of "
                                          r"seconds > 0, got "):
        check_timeout(seconds, "proxy(timeout=...)")


@pytest.mark.parametrize("seconds", [1e-9, 0.5, 3, 1e6])
def test_any_finite_number_above_zero_is_a_timeout(seconds: float) -> None:
    assert check_timeout(seconds, "t") == seconds and type(check_timeout(seconds, "t")) is float


def test_a_proxys_timeout_and_exchanges_are_the_ones_used() -> None:
    async def scenario() -> None:
        async with silent_peer() as (_, address):
            client = Client(*address, ClientConfig(timeout=30))  # the default would hang on
            started = time.monotonic()
            with pytest.raises(RpcTimeoutError, match="within 0.2 s"):
                await client.async_proxy(UserApi, timeout=0.2).get_user(1)
            with pytest.raises(RpcTimeoutError, match="within 0.15 s"):
                await client.exchange(request(99), timeout=0.15)
            assert time.monotonic() - started < 5
            await client.aclose()

    run(scenario)


def test_a_blocking_proxys_timeout_is_the_one_used() -> None:
    async def scenario() -> None:
        async with silent_peer() as (_, address):
            with Client(*address, ClientConfig(timeout=30)) as client:
                users = client.proxy(UserApi, timeout=0.2)
                assert isinstance(users, UserApi)
                with pytest.raises(RpcTimeoutError, match="within 0.2 s"):
                    await asyncio.to_thread(users.get_user, 1)
                with pytest.raises(ConfigError, match=r"proxy\(timeout=...\)"):
                    client.proxy(UserApi, timeout=-1)

    run(scenario)


# -- one connection's requests and deadlines -----------------------------------------------------


def test_a_lone_request_is_written_at_once_and_the_next_deadline_is_armed_exactly() -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            endpoint = Endpoint(address, ClientConfig())
            conn = await endpoint.connect()
            written: list[bytes] = []
            transport_write = conn.transport.write  # type: ignore[union-attr]

            def spy(data: bytes) -> None:
                written.append(bytes(data))
                transport_write(data)

            conn.transport.write = spy  # type: ignore[union-attr,method-assign]
            first = conn.send(1, conn.codec.encode(request(1)), 0.1)
            assert written, "a lone request goes out before send() returns"
            second = conn.send(2, conn.codec.encode(request(2)), 0.4)
            with pytest.raises(RpcTimeoutError):
                await first
            # The timer now waits for the second call's deadline, not for anything earlier.
            loop = asyncio.get_running_loop()
            assert conn._deadline_timer is not None
            assert conn._deadline_timer.when() == pytest.approx(conn._next_expiry)
            assert conn._next_expiry > loop.time() + 0.1
            with pytest.raises(RpcTimeoutError):
                await second
            await until(lambda: len(peer.requests) == 2, 5, "both requests arrived")
            conn.close()

    run(scenario)


def test_after_goaway_the_connection_closes_when_its_last_call_times_out(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            endpoint = Endpoint(address, ClientConfig())
            conn = await endpoint.connect()
            call = conn.send(1, conn.codec.encode(request(1)), 0.3)
            await until(lambda: peer.requests, 5, "the request arrived")
            with caplog.at_level(logging.INFO, logger="stages.v2_1.client"):
                peer.say(goaway_frame(GoAway.SHUTDOWN))
                await until(lambda: conn.goaway is GoAway.SHUTDOWN, 5, "GOAWAY read")
            assert f"{conn.where} sent GOAWAY shutdown" in caplog.text
            assert not conn.closed.done()  # a call is still owed
            with pytest.raises(RpcTimeoutError):
                await call
            await asyncio.wait_for(conn.closed, 5)  # the last call ended: nothing to wait for

    run(scenario)


def test_a_cancelled_call_is_forgotten_at_once_and_its_late_answer_dropped() -> None:
    # Memory: a call whose caller gave up must not be held until its deadline (here 60 s).
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            client = Client(*address, ClientConfig(timeout=60))
            users = client.async_proxy(UserApi)
            calls = [asyncio.create_task(users.get_user(i)) for i in range(50)]
            await until(lambda: len(peer.requests) == 50, 5, "the requests arrived")
            conn = client.endpoint.connection
            assert conn is not None and len(conn.pending) == 50
            for call in calls[:49]:
                call.cancel()
            await asyncio.gather(*calls[:49], return_exceptions=True)
            assert list(conn.pending) == [peer.requests[49].request_id]
            # The first call's answer comes after all: nobody waits for it any more.
            peer.say(encode_frame(Frame(FrameType.RESPONSE, peer.requests[0].request_id)))
            await until(lambda: conn.late_answers == 1, 5, "the late answer dropped")
            assert not calls[49].done() and conn.usable  # the call still waiting is untouched
            calls[49].cancel()
            await client.aclose()

    run(scenario)


def test_after_goaway_cancelling_the_last_owed_call_closes_the_connection() -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            endpoint = Endpoint(address, ClientConfig())
            calls = [asyncio.create_task(endpoint.exchange(request(rid), 60)) for rid in (1, 2)]
            await until(lambda: len(peer.requests) == 2, 5, "the requests arrived")
            conn = endpoint.connection
            assert conn is not None
            peer.say(goaway_frame(GoAway.SHUTDOWN))
            await until(lambda: conn.goaway is GoAway.SHUTDOWN, 5, "GOAWAY read")
            calls[0].cancel()
            await asyncio.gather(calls[0], return_exceptions=True)
            assert not conn.closed.done()  # one call is still owed
            calls[1].cancel()
            await asyncio.gather(calls[1], return_exceptions=True)
            await asyncio.wait_for(conn.closed, 5)  # nothing owed: no reason to stay

    run(scenario)


def test_calls_failed_by_a_close_each_get_the_reason_and_who_closed() -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            # The client closes: its calls say so, and that it was not the peer.
            conn = await Endpoint(address, ClientConfig()).connect()
            calls = [conn.send(i, conn.codec.encode(request(i)), 5) for i in (1, 2)]
            conn.close()
            errors = [await asyncio.gather(c, return_exceptions=True) for c in calls]
            for (error,) in errors:
                assert isinstance(error, ConnectionClosedError)
                assert str(error) == f"connection to {conn.where} closed by the client"
                assert error.closed_by_peer is False
            assert errors[0][0] is not errors[1][0]  # one exception object per call
            # The peer hangs up: the same message for each call, each its own object.
            conn = await Endpoint(address, ClientConfig()).connect()
            calls = [conn.send(i, conn.codec.encode(request(i)), 5) for i in (3, 4)]
            await until(lambda: len(peer.requests) >= 4, 5, "the requests arrived")
            peer.hang_up()
            failed = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(e, ConnectionClosedError) for e in failed)
            assert str(failed[0]) == str(failed[1]) and str(failed[0])
            assert failed[0] is not failed[1]
            assert [e.closed_by_peer for e in failed] == [True, True]  # type: ignore[union-attr]

    run(scenario)


# -- what the peer says: GOAWAY, PING, silence, hanging up ---------------------------------------


def test_goaway_with_an_unreadable_reason_is_a_shutdown_and_an_idle_client_closes_saying_so(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            conn = await Endpoint(address, ClientConfig()).connect()
            await until(lambda: peer.writers, 5, "connected")
            peer.say(encode_frame(Frame(FrameType.GOAWAY, 0, b"\xff\xfe")))
            await asyncio.wait_for(conn.closed, 5)  # nothing owed: closed at once
            assert conn.goaway is GoAway.SHUTDOWN
            # A call that waited for its answer, then GOAWAY: closed once it is answered.
            conn = await Endpoint(address, ClientConfig()).connect()
            call = conn.send(7, conn.codec.encode(request(7)), 5)
            await until(lambda: len(peer.writers) == 2 and peer.requests, 5, "request arrived")
            with caplog.at_level(logging.INFO, logger="stages.v2_1.client"):
                peer.say(goaway_frame(GoAway.IDLE))
                peer.say(encode_frame(Frame(FrameType.RESPONSE, 7, b"", codec=2, status=3)))
                await asyncio.gather(call, return_exceptions=True)
                await asyncio.wait_for(conn.closed, 5)
            assert f"{conn.where} sent GOAWAY idle" in caplog.text
            conn.close()

    run(scenario)


def test_the_reason_a_closed_connection_gives_its_calls() -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            conn = await Endpoint(address, ClientConfig()).connect()
            call = conn.send(1, conn.codec.encode(request(1)), 5)
            await until(lambda: peer.requests, 5, "request arrived")
            for writer in peer.writers:
                writer.close()  # the server closes cleanly: no error, "closed by server"
            [error] = await asyncio.gather(call, return_exceptions=True)
            assert isinstance(error, ConnectionClosedError)
            assert str(error) == f"connection to {conn.where} lost (closed by server)"

    run(scenario)


def test_a_servers_ping_is_answered() -> None:
    async def scenario() -> None:
        pongs: list[Frame] = []

        async def pinging(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(PING_FRAME)
            codec = FrameCodec()
            while not pongs and (data := await reader.read(65536)):
                codec.feed(data)
                pongs.extend(f for f in codec.frames() if f.type == FrameType.PONG)
            writer.transport.abort()

        server = await asyncio.start_server(pinging, "127.0.0.1", 0)
        async with server:
            conn = await Endpoint(server.sockets[0].getsockname()[:2], ClientConfig()).connect()
            await until(lambda: pongs, 5, "the client answered PONG")
            conn.close()

    run(scenario)


def test_a_silent_peer_is_closed_as_dead_and_says_after_how_long() -> None:
    async def scenario() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads, never answers, not even a PING
            writer.transport.abort()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        async with server:
            config = ClientConfig(heartbeat_interval=0.05)
            conn = await Endpoint(server.sockets[0].getsockname()[:2], config).connect()
            call = conn.send(1, conn.codec.encode(request(1)), 30)
            [error] = await asyncio.gather(call, return_exceptions=True)
            idle = config.idle  # with the configured interval, the idle timeout is the config's
            assert isinstance(error, ConnectionClosedError)
            assert str(error) == (f"{conn.where} sent nothing for {idle:.3g} s (heartbeat idle "
                                  "timeout): connection closed as dead")

    run(scenario)


def test_too_many_pings_doubles_the_interval_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with silent_peer() as (peer, address):
            endpoint = Endpoint(address, ClientConfig(heartbeat_interval=0.5))
            conn = await endpoint.connect()
            await until(lambda: peer.writers, 5, "connected")
            with caplog.at_level(logging.WARNING, logger="stages.v2_1.client"):
                peer.say(goaway_frame(GoAway.TOO_MANY_PINGS))
                await asyncio.wait_for(conn.closed, 5)
            assert endpoint.heartbeat_interval == 1.0
            assert f"{endpoint.where}: too many pings; heartbeat interval raised to 1 s" \
                in caplog.text

    run(scenario)
