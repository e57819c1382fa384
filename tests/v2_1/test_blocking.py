"""The blocking proxy's direct route (stages.v2_1.blocking): a calling thread that owns a
connection while it waits.

What it must keep of the multiplexed route: answers matched to their call (a late answer of a
timed-out call is never read by the next one), a server's PING answered and GOAWAY obeyed
(nothing sent on a connection that is going away), a bounded number of connections (past it,
the hand-over route, and a failed attempt holds no place), the hand-over route wherever a call
needs the loop (interceptors), and the heartbeat of a waiting call: a long call kept alive by
its pings, a silent server found dead after the idle timeout (and against a black hole, in
test_faults). Every failure names the server. v3.x's use of the route is tested in
tests/v3_x/test_blocking.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from support import wait_until

from stages.harness.threads import BackgroundServer
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig, ServerConfig
from stages.v2_1.blocking import DirectConnection, DirectPool
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
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.script(conn)
        except ClientLeft:
            conn.close()

    def close(self) -> None:
        self.listener.close()


class ClientLeft(Exception):
    """The client closed the connection: the script has nobody left to serve."""


def read_request(conn: socket.socket, codec: FrameCodec) -> Frame:
    """The next request (ClientLeft if the client closes first)."""
    while True:
        for frame in codec.frames():
            if frame.type == FrameType.REQUEST:
                return frame
        data = conn.recv(65536)
        if not data:
            raise ClientLeft
        codec.feed(data)


def respond(conn: socket.socket, codec: FrameCodec, request: Frame, body: bytes = b"") -> None:
    """Send the RESPONSE frame of ``request``."""
    conn.sendall(codec.encode(Frame(FrameType.RESPONSE, request.request_id, body,
                                    codec=request.codec)))


def direct_to(address: tuple[str, int]) -> DirectConnection:
    """A direct connection with a 1 s heartbeat and a 3 s idle timeout."""
    return DirectConnection(address, 1 << 20, 3.0, 1.0, 3.0)


#: Any request: the scripted peers answer it without reading it.
A_REQUEST = Frame(FrameType.REQUEST, 0, b"x", codec=2)


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


def test_a_short_deadline_after_long_ones_is_kept_on_the_same_connection() -> None:
    # The kernel's bound on a wait is kept from one call to the next (DirectConnection._bound):
    # a call with less time than the bound in force must lower it, not wait the old one out.
    config = ClientConfig(heartbeat_interval=5.0)
    with serving() as address, Client(*address, config) as client:
        users = client.proxy(UserApi, timeout=30)
        assert [users.get_user(i).id for i in (1, 2)] == [1, 2]  # a bound of about 5 s
        started = time.monotonic()
        with pytest.raises(RpcTimeoutError, match=r"within 0\.2 s"):
            client.proxy(TimerApi, timeout=0.2).sleep(3.0)
        assert time.monotonic() - started < 1.0
        assert client.direct.connects == 1  # the same connection carried all three calls


def test_goaway_on_an_idle_connection_is_read_before_anything_is_sent_on_it() -> None:
    requests: list[int] = []

    def script(conn: socket.socket) -> None:
        codec = FrameCodec()
        with conn:
            request = read_request(conn, codec)
            requests.append(request.request_id)
            respond(conn, codec, request)
            conn.sendall(goaway_frame(GoAway.IDLE))
            conn.recv(1)  # then nothing more is read here, until the client closes

    peer = ScriptedPeer(script)
    try:
        direct = direct_to(peer.address)
        answer = direct.call(A_REQUEST, 5)
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
            respond(conn, codec, request, b"ok")

    peer = ScriptedPeer(script)
    try:
        direct = direct_to(peer.address)
        answer = direct.call(A_REQUEST, 5)
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


def test_a_call_longer_than_the_idle_timeout_is_kept_alive_by_its_pings() -> None:
    # The waiting caller pings when its heartbeat says so; the server's PONGs are signs of life.
    config = ClientConfig(heartbeat_interval=0.05, idle_timeout=0.15, timeout=10)
    server_config = ServerConfig(min_ping_interval=0.01)
    with BackgroundServer(lambda: new_server(server_config)) as bg, \
            Client(*bg.address, config) as client:
        client.proxy(TimerApi).sleep(0.6)  # four idle timeouts without an answer
        assert client.direct.connects == 1


def test_a_silent_server_is_declared_dead_after_the_idle_timeout_and_says_so() -> None:
    def script(conn: socket.socket) -> None:
        with conn:  # reads the request and the pings, answers nothing
            while conn.recv(65536):
                pass

    peer = ScriptedPeer(script)
    try:
        config = ClientConfig(heartbeat_interval=0.05, idle_timeout=0.15, timeout=10)
        with Client(*peer.address, config) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionClosedError) as failed:
                client.proxy(UserApi).get_user(1)
            assert time.monotonic() - started < 5  # the idle timeout, not the 10 s deadline
            assert str(failed.value) == (f"{peer.address[0]}:{peer.address[1]} sent nothing for "
                                         "0.15 s (heartbeat idle timeout): connection closed as "
                                         "dead")
    finally:
        peer.close()


def test_the_closed_connection_error_names_the_server() -> None:
    def script(conn: socket.socket) -> None:
        with conn:
            read_request(conn, FrameCodec())

    peer = ScriptedPeer(script)
    try:
        with Client(*peer.address) as client, pytest.raises(ConnectionClosedError) as failed:
            client.proxy(UserApi).get_user(1)
        assert str(failed.value) == (f"{peer.address[0]}:{peer.address[1]} closed the "
                                     "connection before answering")
    finally:
        peer.close()


def test_a_goaway_sent_while_the_connection_sat_idle_sends_the_next_call_elsewhere() -> None:
    idle = threading.Event()
    served: list[int] = []

    def script(conn: socket.socket) -> None:
        codec = FrameCodec()
        with conn:
            request = read_request(conn, codec)
            served.append(peer.accepted)
            respond(conn, codec, request)
            idle.wait(5)  # the client has its answer and gave the connection back
            conn.sendall(goaway_frame(GoAway.SHUTDOWN))
            conn.recv(1)  # nothing more is read here, until the client closes

    peer = ScriptedPeer(script)
    try:
        pool = DirectPool(lambda: direct_to(peer.address), 1)
        conn = pool.borrow()
        assert conn is not None
        conn.call(A_REQUEST, 5)
        pool.give_back(conn)
        idle.set()
        deadline = time.monotonic() + 5
        while conn.goaway is None:  # read by the next borrower, before it sends anything
            assert time.monotonic() < deadline, "GOAWAY not read"
            again = pool.borrow()
            assert again is not None
            if again is conn:
                pool.give_back(again)
        assert again is not conn and not conn.open and conn.goaway is GoAway.SHUTDOWN
        # Limit 1: the connection that went away no longer counts, so a new one could open.
        assert pool.connects == 2 and pool.borrow() is None
        pool.give_back(again)
        pool.close()
        assert served == [1]  # nothing was sent on the connection that went away
    finally:
        peer.close()


def test_a_connection_the_server_closed_while_idle_is_replaced_within_the_limit() -> None:
    config = ServerConfig(idle_timeout=0.2)
    with BackgroundServer(lambda: new_server(config)) as bg, \
            Client(*bg.address, ClientConfig(direct_connections=1)) as client:
        users = client.proxy(UserApi)
        assert users.get_user(1).id == 1
        wait_until(lambda: bg.call(lambda: bg.server.connection_count) == 0, 5,
                   "the server lets the idle connection go")
        assert users.get_user(2).id == 2
        # Found gone at the next call, closed and replaced: still the direct route.
        assert client.direct.connects == 2 and client.connects == 0


class Held:
    """What the pool needs of a connection (open, goaway, usable, close), and nothing else."""

    def __init__(self) -> None:
        self.open = True
        self.goaway: GoAway | None = None

    def usable(self) -> bool:
        return self.open and self.goaway is None

    def close(self) -> None:
        self.open = False


def test_the_kernels_bound_on_a_wait_changes_only_when_it_must() -> None:
    # DirectConnection._bound: a bound in force is kept while it is at most 1 ms too long and at
    # least half of what is asked (no system call), and set otherwise, in the kernel too.
    with BackgroundServer(new_server) as bg:
        conn = DirectConnection(bg.address, 1 << 20, 5.0, 5.0, 15.0)
        # Closed only once the server has taken the connection: one the server's loop accepts
        # while the server shuts down is left open (a known race of Server.aclose).
        server = bg.server
        assert server is not None
        wait_until(lambda: bg.call(lambda: len(server.connections)) == 1, 5,
                   "the server takes the connection")
        try:
            option = socket.SO_RCVTIMEO

            def kernel() -> float:  # in the kernel's ticks, rounded up
                whole, micro = struct.unpack("ll", conn.sock.getsockopt(socket.SOL_SOCKET,
                                                                        option, 16))
                return whole + micro / 1e6

            conn._bound(option, 1.0)
            assert conn._bounds[option] == 1.0 and kernel() == pytest.approx(1.0, abs=0.011)
            conn._bound(option, 0.9995)  # 0.5 ms too long: kept
            conn._bound(option, 2.0)  # half of what is asked: kept
            assert conn._bounds[option] == 1.0 and kernel() == pytest.approx(1.0, abs=0.011)
            conn._bound(option, 0.25)  # far too long for it: lowered
            assert conn._bounds[option] == 0.25 and kernel() == pytest.approx(0.25, abs=0.011)
            conn._bound(option, 0.6)  # under half of what is asked: raised
            assert conn._bounds[option] == 0.6
            conn._bound(option, 0.0)  # never 0, which would mean: wait for ever
            assert 0 < kernel() <= 0.011
        finally:
            conn.close()


def test_the_pool_counts_what_is_open_through_failed_connects_and_closing() -> None:
    attempts: list[str] = []

    def connect() -> Any:
        attempts.append("connect")
        if len(attempts) == 1:
            raise ConnectionRefusedError("the server is not there yet")
        return Held()

    pool = DirectPool(connect, limit=1)
    with pytest.raises(ConnectionRefusedError):
        pool.borrow()
    first = pool.borrow()  # the failed attempt holds no place: there is room for this one
    assert isinstance(first, Held) and pool.connects == 1
    assert pool.borrow() is None  # the limit: the caller takes the hand-over route
    first.goaway = GoAway.SHUTDOWN
    pool.give_back(first)  # going away: closed, not kept
    assert not first.open
    second = pool.borrow()
    assert isinstance(second, Held) and second is not first and pool.connects == 2
    pool.close()
    pool.give_back(second)  # the pool closed meanwhile: closed, not kept
    assert not second.open and pool.borrow() is None


def test_a_goaway_whose_reason_cannot_be_read_still_means_going_away() -> None:
    def script(conn: socket.socket) -> None:
        codec = FrameCodec()
        with conn:
            request = read_request(conn, codec)
            respond(conn, codec, request)
            conn.sendall(codec.encode(Frame(FrameType.GOAWAY, 0, b"\xff\xfe")))
            conn.recv(1)

    peer = ScriptedPeer(script)
    try:
        direct = direct_to(peer.address)
        direct.call(A_REQUEST, 5)
        wait_until(lambda: not direct.usable(), 5, "the GOAWAY read")
        assert direct.goaway is GoAway.SHUTDOWN
        direct.close()
    finally:
        peer.close()


def test_bytes_that_break_the_protocol_fail_the_call_and_name_the_server() -> None:
    def script(conn: socket.socket) -> None:
        with conn:
            read_request(conn, FrameCodec())
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # not a frame
            conn.recv(1)

    peer = ScriptedPeer(script)
    try:
        with Client(*peer.address) as client, pytest.raises(ConnectionClosedError) as failed:
            client.proxy(UserApi).get_user(1)
        assert str(failed.value).startswith(
            f"connection to {peer.address[0]}:{peer.address[1]} failed: ")
    finally:
        peer.close()
