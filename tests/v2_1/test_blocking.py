"""The blocking proxy's direct route (stages.v2_1.blocking): a calling thread that owns a
connection while it waits.

What it must keep of the multiplexed route: answers matched to their call (a late answer of a
timed-out call is never read by the next one), a server's PING answered and GOAWAY obeyed
(nothing sent on a connection that is going away), a bounded number of connections (past it,
the hand-over route), and the hand-over route wherever a call needs the loop (interceptors,
v3.x). Its heartbeat while a call waits is tested against a black hole in test_faults.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from stages.harness.threads import BackgroundServer
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig
from stages.v2_1.blocking import DirectConnection
from stages.v2_1.cli import new_server
from stages.v2_1.errors import ConnectionClosedError, RpcTimeoutError
from stages.v2_1.protocol import PING_FRAME, Frame, FrameCodec, FrameType, GoAway, goaway_frame
from stages.v2_1.timer_stub import TimerApi


@contextmanager
def serving() -> Iterator[tuple[str, int]]:
    with BackgroundServer(new_server) as bg:
        yield bg.address


class ScriptedPeer:
    """A blocking server on a thread: each accepted connection is handed to ``script``."""

    def __init__(self, script: Any) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.script = script
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.script, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def read_request(conn: socket.socket, codec: FrameCodec) -> Frame:
    while True:
        for frame in codec.frames():
            if frame.type == FrameType.REQUEST:
                return frame
        data = conn.recv(65536)
        assert data, "the client closed the connection"
        codec.feed(data)


def test_a_blocking_call_owns_a_direct_connection_and_gives_it_back() -> None:
    with serving() as address, Client(*address) as client:
        users = client.proxy(UserApi)
        assert [users.get_user(i).id for i in (1, 2, 3)] == [1, 2, 3]
        assert client.direct.connects == 1  # one connection, reused by every call
        assert client.connection is None and client._loop_thread is None  # no hand-over


def test_more_threads_than_direct_connections_take_the_hand_over_route() -> None:
    with serving() as address, Client(*address, ClientConfig(direct_connections=2)) as client:
        timer = client.proxy(TimerApi)
        with ThreadPoolExecutor(6) as pool:
            assert len(list(pool.map(lambda _: timer.sleep(0.2), range(6)))) == 6
        assert client.direct.connects == 2  # the bound holds
        assert client.connects == 1  # the other calls went over the multiplexed connection


def test_zero_direct_connections_turns_the_route_off() -> None:
    with serving() as address, Client(*address, ClientConfig(direct_connections=0)) as client:
        assert client.proxy(UserApi).get_user(1).id == 1
        assert client.direct.connects == 0 and client.connects == 1


def test_a_client_with_interceptors_hands_every_call_to_its_loop() -> None:
    seen: list[str] = []

    async def record(call: Any, proceed: Any) -> Any:
        seen.append(call.method)
        return await proceed(call)

    with serving() as address, Client(*address, interceptors=[record]) as client:
        assert client.proxy(UserApi).get_user(1).id == 1
        assert seen == ["get_user"] and client.direct.connects == 0


def test_a_timed_out_connection_is_closed_so_its_late_answer_is_never_read() -> None:
    with serving() as address, Client(*address) as client:
        timer = client.proxy(TimerApi, timeout=0.1)
        with pytest.raises(RpcTimeoutError, match=r"within 0\.1 s"):
            timer.sleep(0.4)  # its answer comes 0.3 s after the caller gave up
        started = time.monotonic()
        assert client.proxy(UserApi).get_user(7).id == 7  # not the late answer of sleep()
        assert time.monotonic() - started < 0.3  # and it did not wait for it either
        assert client.direct.connects == 2


def test_goaway_on_an_idle_connection_is_read_before_anything_is_sent_on_it() -> None:
    requests: list[int] = []

    def script(conn: socket.socket) -> None:
        codec = FrameCodec()
        with conn:
            request = read_request(conn, codec)
            requests.append(request.request_id)
            conn.sendall(codec.encode(Frame(FrameType.RESPONSE, request.request_id, b"",
                                            codec=request.codec, status=0)))
            conn.sendall(goaway_frame(GoAway.IDLE))
            conn.recv(1)  # then nothing more is read here, until the client closes

    peer = ScriptedPeer(script)
    try:
        direct = DirectConnection(peer.address, 1 << 20, 3.0, 1.0, 3.0)
        answer = direct.call(Frame(FrameType.REQUEST, 0, b"x", codec=2), 5)
        assert answer.type == FrameType.RESPONSE and requests == [answer.request_id]
        deadline = time.monotonic() + 5
        while direct.usable():
            assert time.monotonic() < deadline, "GOAWAY not seen"
        assert direct.goaway is GoAway.IDLE and requests == [answer.request_id]
        direct.close()
    finally:
        peer.close()


def test_a_servers_ping_is_answered_while_a_call_waits() -> None:
    pongs: list[Frame] = []

    def script(conn: socket.socket) -> None:
        codec = FrameCodec()
        with conn:
            request = read_request(conn, codec)
            conn.sendall(PING_FRAME)
            while not pongs:
                data = conn.recv(65536)
                if not data:
                    return
                codec.feed(data)
                pongs.extend(f for f in codec.frames() if f.type == FrameType.PONG)
            conn.sendall(codec.encode(Frame(FrameType.RESPONSE, request.request_id, b"ok",
                                            codec=request.codec)))

    peer = ScriptedPeer(script)
    try:
        direct = DirectConnection(peer.address, 1 << 20, 3.0, 1.0, 3.0)
        answer = direct.call(Frame(FrameType.REQUEST, 0, b"x", codec=2), 5)
        assert answer.body == b"ok" and len(pongs) == 1
        direct.close()
    finally:
        peer.close()


def test_a_connection_closed_before_the_answer_fails_the_call_and_is_not_reused() -> None:
    def script(conn: socket.socket) -> None:
        with conn:
            read_request(conn, FrameCodec())

    peer = ScriptedPeer(script)
    try:
        with Client(*peer.address) as client:
            with pytest.raises(ConnectionClosedError, match="closed the connection"):
                client.proxy(UserApi).get_user(1)
            with pytest.raises(ConnectionClosedError):
                client.proxy(UserApi).get_user(2)
            assert peer.accepted == 2  # a new connection for the second call
    finally:
        peer.close()


def test_a_closed_client_refuses_blocking_calls() -> None:
    with serving() as address:
        client = Client(*address)
        users = client.proxy(UserApi)
        assert users.get_user(1).id == 1
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            users.get_user(2)


def test_a_v3_client_never_takes_the_direct_route() -> None:
    from stages.v3_x import Client as V3Client
    from stages.v3_x import StaticRegistry

    with serving() as address, V3Client(StaticRegistry([f"{address[0]}:{address[1]}"])) as client:
        assert client.proxy(UserApi).get_user(1).id == 1
        assert client.direct.connects == 0
