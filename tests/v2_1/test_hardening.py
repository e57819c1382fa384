"""v2.1 against careless and hostile clients: real server processes where the behaviour is what
a client sees, test-only implementations in this process where a count inside the server is.

* an answer over the frame cap fails only its own call on a shared connection;
* a request id already in flight is refused with a protocol error;
* plain methods run in a thread pool: a blocking one holds up no other client, costs nobody a
  heartbeat, and is waited for (within the grace) by a graceful shutdown;
* calls running on the whole server are bounded (``max_server_calls``);
* NaN and infinite durations are refused before they reach a timer;
* a closed connection's calls are cancelled, as far as a thread allows.

The limits every stage shares are in tests/contract/test_limits.py.
"""

from __future__ import annotations

import abc
import asyncio
import math
import socket
import statistics
import threading
import time
from typing import Any

import pytest
from support import run, until

from stages.harness.process import ServerProcess
from stages.v2_0.api import address_of
from stages.v2_0.serializers import Invocation, PickleSerializer
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import (
    ApiDefinitionError,
    Client,
    ClientConfig,
    ConfigError,
    ConnectionClosedError,
    Frame,
    FrameCodec,
    FrameType,
    RemoteError,
    RpcTimeoutError,
    Server,
    ServerConfig,
    Status,
    rpc_api,
    rpc_timeout,
)
from stages.v2_1.cli import new_server
from stages.v2_1.protocol import encode_frame
from stages.v2_1.server import Run, ServerConnection
from stages.v2_1.timer_stub import MAX_SECONDS, TimerApi, TimerImpl, check_duration

STAGE = "stages.v2_1"


def request(interface: type, method: str, args: tuple[Any, ...], request_id: int) -> bytes:
    """An encoded REQUEST frame, as a client would send it (pickle)."""
    body = PickleSerializer().encode_invocation(Invocation(address_of(interface), method, args))
    return encode_frame(Frame(FrameType.REQUEST, request_id, body,
                              codec=PickleSerializer.serializer_id))


def read_until_closed(sock: socket.socket) -> list[Frame]:
    """Every frame the server sends until it closes (the socket's timeout bounds the wait)."""
    codec = FrameCodec()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return list(codec.frames())
        codec.feed(data)


def collect_loop_errors() -> list[dict[str, Any]]:
    """Errors the running loop reports (a write to a dead transport, a failed callback)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


# -- an answer over the frame cap ----------------------------------------------------------------


#: A frame cap below what ``find_users("")`` answers (five users) but above the requests.
SMALL_CAP = 256


@pytest.mark.timeout(30)
def test_an_answer_over_max_frame_size_fails_only_its_own_call_on_a_shared_connection() -> None:
    """``--max-frame-size 256``. ``find_users("")`` is a small request with a larger answer
    (five users): that call gets TOO_LARGE. The slow call in flight on the same connection,
    and the calls after, are answered on that same connection."""
    local = new_server(ServerConfig(max_frame_size=SMALL_CAP))  # sizes, computed here
    sizes = {}
    for name, args in (("find_users", ("",)), ("get_user", (1,))):
        codec = FrameCodec()
        codec.feed(request(UserApi, name, args, 1))
        frame = codec.next_frame()
        assert isinstance(frame, Frame)
        sizes[name] = (len(frame.body), len(local.handle(frame).body))
    assert sizes["find_users"][0] < SMALL_CAP < sizes["find_users"][1], sizes
    assert sizes["get_user"][1] < SMALL_CAP, sizes
    with ServerProcess(STAGE, ["--max-frame-size", str(SMALL_CAP)]) as proc:

        async def scenario() -> None:
            client = Client(*proc.address)
            try:
                users = client.async_proxy(UserApi)
                slow = asyncio.ensure_future(client.async_proxy(TimerApi).sleep(0.3))
                with pytest.raises(RemoteError) as refused:
                    await users.find_users("")
                assert refused.value.status == Status.TOO_LARGE
                assert f"max_frame_size {SMALL_CAP} bytes" in refused.value.message
                assert (await users.get_user(1)).id == 1
                assert isinstance(await slow, float)
                assert client.connects == 1
            finally:
                await client.aclose()

        run(scenario)


# -- a request id already in flight ---------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method, seconds", [("sleep", 5.0), ("block", 0.3)])
def test_a_request_id_already_in_flight_is_refused_with_a_protocol_error(
        method: str, seconds: float) -> None:
    """Request 7 runs (a task, or a thread-pool call); a second request 7 arrives. An answer
    could not tell the two apart, so the server closes the connection with PROTOCOL_ERROR on
    request id 0, naming the id, and answers neither call."""
    with ServerProcess(STAGE) as proc, socket.create_connection(proc.address, timeout=5) as sock:
        sock.sendall(request(TimerApi, method, (seconds,), 7)
                     + request(TimerApi, method, (0.0,), 7))
        frames = read_until_closed(sock)
        assert [(f.type, f.request_id, f.status) for f in frames] == [
            (FrameType.RESPONSE, 0, Status.PROTOCOL_ERROR)]
        assert b"request id 7 is already in flight" in frames[0].body


@rpc_api(namespace="tests")
class HoldApi(abc.ABC):
    @abc.abstractmethod
    def wait(self, seconds: float) -> int: ...

    @abc.abstractmethod
    def block(self, seconds: float) -> int: ...


class Holder(HoldApi):
    """Counts the calls that started, ran to their end, or were cancelled, and the most that
    ran at once."""

    def __init__(self) -> None:
        self.started = self.finished = self.cancelled = self.now = self.peak = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.started += 1
            self.now += 1
            self.peak = max(self.peak, self.now)

    def _leave(self) -> None:
        with self._lock:
            self.now -= 1

    async def wait(self, seconds: float) -> int:  # type: ignore[override]
        self._enter()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self._leave()
        self.finished += 1
        return self.started

    def block(self, seconds: float) -> int:
        self._enter()
        try:
            time.sleep(seconds)
        finally:
            self._leave()
        with self._lock:
            self.finished += 1
        return self.started


def test_a_duplicate_request_id_starts_nothing_and_the_first_call_is_cancelled() -> None:
    async def scenario() -> None:
        holder = Holder()
        server = Server()
        server.bind(HoldApi, holder)
        async with server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(request(HoldApi, "wait", (30.0,), 7) + request(HoldApi, "wait", (0.0,), 7))
            assert await asyncio.wait_for(reader.read(), 5) != b""  # the error, then EOF
            await until(lambda: server.connection_count == 0, what="connection closed")
            await until(lambda: holder.cancelled == 1, what="the first call cancelled")
            assert holder.started == 1 and server.calls_running == 0
            writer.close()
            await writer.wait_closed()

    run(scenario)


# -- plain methods run in a thread pool -----------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_blocking_method_holds_up_no_other_client_nor_its_heartbeat() -> None:
    """Client A calls ``TimerApi.block(1.0)``, a plain method that sleeps in its thread. While it
    runs, client B makes 50 calls one after the other: their p99 stays far below the second
    (it would be a whole second if the method ran on the event loop), and B, whose heartbeat
    declares a server dead after 0.3 s of silence, stays connected throughout."""
    with ServerProcess(STAGE, ["--min-ping-interval", "0.05"]) as proc:

        async def scenario() -> None:
            quick = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3)
            a, b = Client(*proc.address, quick), Client(*proc.address, quick)
            try:
                users_a, users_b = a.async_proxy(UserApi), b.async_proxy(UserApi)
                assert (await users_b.get_user(1)).id == 1
                start = time.monotonic()
                blocking = asyncio.ensure_future(a.async_proxy(TimerApi).block(1.0))
                # The frames of one connection are read in order: once this is answered, the
                # server has read the block() call and handed it to a thread.
                assert (await users_a.get_user(2)).id == 2
                latencies = []
                for i in range(50):
                    t0 = time.monotonic()
                    assert (await users_b.get_user(i + 1)).id == i + 1
                    latencies.append(time.monotonic() - t0)
                assert not blocking.done()  # B's calls all ran while block() was running
                p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
                print(f"while block(1.0) runs: p50 {statistics.median(latencies) * 1e3:.2f} ms, "
                      f"p99 {p99 * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
                assert p99 < 0.1, latencies
                await blocking
                assert time.monotonic() - start >= 1.0
                assert b.connects == 1 and a.connects == 1  # no heartbeat timeout on either
            finally:
                await a.aclose()
                await b.aclose()

        run(scenario)


def test_how_each_demo_method_runs() -> None:
    server = new_server()
    runs = {(address.rsplit(".", 1)[-1], name): how for (address, name), how in server.runs.items()}
    assert runs[("UserApi", "get_user")] is Run.INLINE
    assert runs[("InventoryApi", "order")] is Run.INLINE
    assert runs[("TimerApi", "sleep")] is Run.TASK
    assert runs[("TimerApi", "block")] is Run.THREAD


def test_bind_checks_its_inline_names() -> None:
    server = Server()
    with pytest.raises(ApiDefinitionError, match="does not declare"):
        server.bind(TimerApi, TimerImpl(), inline=("nap",))
    with pytest.raises(ApiDefinitionError, match="coroutine"):
        server.bind(TimerApi, TimerImpl(), inline=("sleep",))
    with pytest.raises(ApiDefinitionError, match="collection"):
        server.bind(TimerApi, TimerImpl(), inline="block")
    assert server.bindings == {} and server.runs == {}  # nothing half-bound
    address = server.bind(TimerApi, TimerImpl(), inline=True)  # plain methods only
    assert server.runs == {(address, "sleep"): Run.TASK, (address, "block"): Run.INLINE}
    v2_0_style = Server()
    assert v2_0_style.bind(TimerApi, TimerImpl()) == address  # v2.0's signature still works
    assert v2_0_style.runs[address, "block"] is Run.THREAD


def test_at_most_max_workers_plain_methods_run_at_once_and_the_rest_wait_their_turn() -> None:
    async def scenario() -> None:
        holder = Holder()
        server = Server(ServerConfig(max_workers=2))
        server.bind(HoldApi, holder)
        async with server:
            client = Client(*server.address)
            api = client.async_proxy(HoldApi)
            assert len(await asyncio.gather(*(api.block(0.05) for _ in range(5)))) == 5
            assert holder.peak == 2 and holder.finished == 5
            await client.aclose()

    run(scenario)


def test_shutdown_waits_for_a_thread_pool_call_within_the_grace_then_stops_the_pool() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(shutdown_grace=5.0))
        async with server:
            client = Client(*server.address)
            timer = client.async_proxy(TimerApi)
            running = asyncio.ensure_future(timer.block(0.3))
            await until(lambda: server.calls_running == 1, what="block() runs")
            pool = server.pool
            start = time.monotonic()
            await server.aclose()
            assert time.monotonic() - start >= 0.25  # it waited for the call
            assert isinstance(await running, float)  # which was answered
            assert server._pool is None and pool._shutdown
            await client.aclose()

    run(scenario)


def test_shutdown_does_not_wait_for_a_thread_past_the_grace() -> None:
    async def scenario() -> None:
        server = new_server(ServerConfig(shutdown_grace=0.1))
        async with server:
            client = Client(*server.address)
            running = asyncio.ensure_future(client.async_proxy(TimerApi).block(1.0))
            await until(lambda: server.calls_running == 1, what="block() runs")
            start = time.monotonic()
            await server.aclose()
            assert time.monotonic() - start < 0.8
            with pytest.raises(ConnectionClosedError):
                await running
            await client.aclose()

    run(scenario)


# -- calls running on the whole server ------------------------------------------------------------


@pytest.mark.timeout(30)
def test_past_max_server_calls_every_connection_waits_and_stays_alive() -> None:
    """``--max-server-calls 2``: client A's two 0.5 s calls fill the server (A's raw socket
    sees the unasked PONG the server sends when it stops reading). Client B's call, on another
    connection, is then not read until A's calls finish; meanwhile B's heartbeat (idle
    timeout 0.3 s) must not take the server for dead."""
    with ServerProcess(STAGE, ["--max-server-calls", "2", "--min-ping-interval", "0.05"]) as proc:

        async def scenario() -> None:
            reader, writer = await asyncio.open_connection(*proc.address)
            writer.write(request(TimerApi, "sleep", (0.5,), 1)
                         + request(TimerApi, "sleep", (0.5,), 2))
            codec = FrameCodec()
            frames: list[Frame] = []
            while not any(f.type == FrameType.PONG for f in frames):  # the server is full
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data
                codec.feed(data)
                frames.extend(codec.frames())
            client = Client(*proc.address, ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3))
            try:
                start = time.monotonic()
                await client.async_proxy(TimerApi).sleep(0)
                waited = time.monotonic() - start
                assert 0.3 < waited < 2.0, waited  # until A's calls made room
                assert client.connects == 1
            finally:
                await client.aclose()
            while sum(f.type == FrameType.RESPONSE for f in frames) < 2:
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data
                codec.feed(data)
                frames.extend(codec.frames())
            assert all(f.status == Status.OK for f in frames if f.type == FrameType.RESPONSE)
            writer.close()
            await writer.wait_closed()

        run(scenario)


@pytest.mark.parametrize("method", ["wait", "block"])
def test_max_server_calls_bounds_calls_over_all_connections(method: str) -> None:
    async def scenario() -> None:
        holder = Holder()
        server = Server(ServerConfig(max_server_calls=3))
        server.bind(HoldApi, holder)
        async with server:
            clients = [Client(*server.address) for _ in range(3)]
            try:
                calls = [getattr(c.async_proxy(HoldApi), method)(0.05)
                         for c in clients for _ in range(4)]
                assert len(await asyncio.gather(*calls)) == 12
                assert holder.peak == 3 and holder.finished == 12
                assert server.calls_running == 0
            finally:
                for c in clients:
                    await c.aclose()

    run(scenario)


def test_pause_writing_stops_taking_frames_until_resume_writing() -> None:
    """Sans sockets: ten requests arrive in one read. The first write of answers fills the
    transport's buffer (pause_writing): the other eight requests wait in the codec, unread by
    the server, and reading stops; resume_writing answers them and reads again."""

    async def scenario() -> None:
        conn = ServerConnection(new_server())
        events: list[str] = []

        class Transport(asyncio.Transport):
            def write(self, data: bytes | bytearray | memoryview) -> None:
                events.append("write")
                if events.count("write") == 1:
                    conn.pause_writing()  # as asyncio does past the high-water mark

            def is_closing(self) -> bool:
                return False

            def pause_reading(self) -> None:
                events.append("pause_reading")

            def resume_reading(self) -> None:
                events.append("resume_reading")

            def get_extra_info(self, name: str, default: object = None) -> object:
                return ("127.0.0.1", 1) if name == "peername" else default

        conn.connection_made(Transport())
        one = request(UserApi, "get_user", (1,), 1)
        conn.data_received(b"".join(request(UserApi, "get_user", (1,), i) for i in range(10)))
        assert events == ["write", "pause_reading"]
        assert conn.codec.buffered == 8 * len(one)
        conn.resume_writing()
        await until(lambda: "resume_reading" in events, what="reading resumes")
        assert conn.codec.buffered == 0 and events[-1] == "resume_reading"
        conn.connection_lost(None)

    run(scenario)


# -- durations ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_nan_and_infinite_durations_are_refused_and_the_servers_timers_still_work() -> None:
    """Every bad duration sent to ``sleep`` (a task) and ``block`` (a thread) comes back as a
    ValueError. Then another client: a server-side sleep ends on time, a client deadline fires,
    an idle connection is kept by pings, and a silent one is closed by the server's idle
    timer. (A NaN that reached the event loop's heap of timers would put them out of order.)"""
    with ServerProcess(STAGE, ["--idle-timeout", "0.5", "--min-ping-interval", "0.05"]) as proc:

        async def scenario() -> None:
            config = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3)
            careless = Client(*proc.address, config)
            try:
                timer = careless.async_proxy(TimerApi)
                for value in (math.nan, math.inf, -math.inf, -1.0, MAX_SECONDS + 1):
                    for method in (timer.sleep, timer.block):
                        with pytest.raises(ValueError, match="seconds must be from 0 to 60"):
                            await method(value)
            finally:
                await careless.aclose()

            other = Client(*proc.address, config)
            try:
                timer = other.async_proxy(TimerApi)
                start = time.monotonic()
                await timer.sleep(0.1)
                assert 0.1 <= time.monotonic() - start < 0.5
                with rpc_timeout(0.2), pytest.raises(RpcTimeoutError):
                    await timer.sleep(1.0)
                await asyncio.sleep(0.8)  # idle: only the pings keep the connection
                assert (await other.async_proxy(UserApi).get_user(1)).id == 1
                assert other.connects == 1
            finally:
                await other.aclose()

            reader, writer = await asyncio.open_connection(*proc.address)
            start = time.monotonic()
            while await asyncio.wait_for(reader.read(65536), 5):
                pass  # a GOAWAY idle, then EOF
            assert 0.4 < time.monotonic() - start < 1.5
            writer.close()
            await writer.wait_closed()

        run(scenario)


@pytest.mark.parametrize("seconds", [0, 0.0, 1, MAX_SECONDS])
def test_durations_at_the_limits_are_accepted(seconds: float) -> None:
    assert check_duration(seconds) == float(seconds)


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -math.inf, -1e-9, MAX_SECONDS + 1e-9,
                                     pytest.param(10**400, id="10**400")])
def test_bad_durations_are_value_errors(seconds: float) -> None:
    with pytest.raises(ValueError):
        check_duration(seconds)


@pytest.mark.parametrize("seconds", [True, "1", None, [1.0]])
def test_durations_that_are_not_numbers_are_type_errors(seconds: object) -> None:
    with pytest.raises(TypeError):
        check_duration(seconds)


@pytest.mark.parametrize("kwargs", [{"min_ping_interval": math.nan}, {"shutdown_grace": math.inf},
                                    {"idle_timeout": math.inf}, {"frame_timeout": math.nan},
                                    {"max_workers": 0}, {"max_server_calls": 2.5},
                                    {"max_concurrent_calls": math.inf}])
def test_server_settings_must_be_finite_and_counts_whole(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"heartbeat_interval": math.inf}, {"idle_timeout": math.nan},
                                    {"backoff_max": math.inf}, {"backoff_jitter": math.nan},
                                    {"connect_timeout": math.nan}, {"backoff_jitter": "0.1"}])
def test_client_settings_must_be_finite(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


# -- a closed connection's calls ------------------------------------------------------------------


def test_the_calls_of_a_closed_connection_are_cancelled() -> None:
    """A client starts a 30 s coroutine call and three 0.3 s blocking calls on a server with
    one worker thread, then goes away. The coroutine is cancelled; the blocking call that was
    running finishes (a thread cannot be stopped) and its answer is dropped; the two waiting
    for the thread never start; the server counts no call left and logs no error."""

    async def scenario() -> None:
        errors = collect_loop_errors()
        holder = Holder()
        server = Server(ServerConfig(max_workers=1))
        server.bind(HoldApi, holder)
        async with server:
            client = Client(*server.address)
            api = client.async_proxy(HoldApi)
            calls = [asyncio.ensure_future(api.wait(30)),
                     *(asyncio.ensure_future(api.block(0.3)) for _ in range(3))]
            await until(lambda: holder.started == 2, what="the coroutine and one block() run")
            await client.aclose()
            await asyncio.gather(*calls, return_exceptions=True)
            await until(lambda: server.connection_count == 0, what="the server lets go")
            await until(lambda: holder.cancelled == 1, what="the coroutine is cancelled")
            assert server.calls_running == 0
            await until(lambda: holder.finished == 1, what="the running block() ends")
            # The pool's queue is first in, first out: once this has run, the two blocks queued
            # before it have either run or been dropped.
            await asyncio.get_running_loop().run_in_executor(server.pool, lambda: None)
            assert holder.started == 2
        assert errors == []

    run(scenario)


@rpc_api(namespace="tests")
class GivesUpApi(abc.ABC):
    @abc.abstractmethod
    def gives_up(self) -> int:
        """Await something that another part of the program cancelled."""


class GivesUp(GivesUpApi):
    async def gives_up(self) -> int:  # type: ignore[override]
        inner = asyncio.get_running_loop().create_future()
        inner.cancel()  # say, a helper task cancelled by someone else
        return await inner  # CancelledError: the call's own task ends cancelled


def test_a_method_whose_task_ends_cancelled_is_answered_not_left_to_the_deadline() -> None:
    # Nobody cancelled the call from outside: its caller still waits, and must hear why.
    async def scenario() -> None:
        server = Server(ServerConfig())
        server.bind(GivesUpApi, GivesUp())
        async with server:
            client = Client(*server.address, ClientConfig(timeout=30))
            started = time.monotonic()
            with pytest.raises(RemoteError, match=r"gives_up\(\) was cancelled on the server"):
                await client.async_proxy(GivesUpApi).gives_up()
            assert time.monotonic() - started < 5  # an answer, not the 30 s deadline
            assert server.calls_running == 0 and server.connection_count == 1
            await client.aclose()

    run(scenario)
