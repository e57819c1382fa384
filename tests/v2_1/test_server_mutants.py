"""Tests that kill mutants of ``stages/v2_1/server.py`` which survived ``make mutate``.

A raw asyncio client plays the peer, so that each test sees exactly the frames the server sends
and decides exactly what it sends back: requests in one write or in several, pings, a half frame,
nothing at all. The server is a real :class:`Server` on the test's own loop, serving a probe API
whose methods record what ran and wait for the test to release them. What they pin down: how
``bind`` decides where each method runs; each way of running a method answers its own request id,
an answer no serializer can encode included; the calls counted while they run; a request id
already in flight, a frame too large or of an unexpected type closes the connection with a
reason, after the answers made before it; both call limits at exactly the limit and one past it,
the unasked PONG and the low-water mark; a client that does not read its answers is given no more
work; the idle verdict, re-armed by every read and suspended while the server pushes back; the
frame timeout; ping strikes; ``max_connections``; a closed connection's calls cancelled; a
graceful shutdown's GOAWAY, grace and thread pool, and a client that reads nothing let go; and
that an answer from a subclass's ``on_frame`` (how v3.x adds frame types) is sent.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import functools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import run, until

from stages.v2_0.api import address_of
from stages.v2_0.serializers import ErrorInfo, Invocation, Outcome, PickleSerializer
from stages.v2_1 import ApiDefinitionError, Server, ServerConfig, Status, rpc_api
from stages.v2_1.protocol import (
    PING_FRAME,
    PONG_FRAME,
    Frame,
    FrameCodec,
    FrameType,
    encode_frame,
)
from stages.v2_1.server import Run, ServerConnection

SERIALIZER = PickleSerializer()
LOGGER = "stages.v2_1.server"


# -- the probe: methods that record what ran and wait for the test ------------------------------


@rpc_api(namespace="tests")
class ProbeApi(abc.ABC):
    @abc.abstractmethod
    def note(self, entry: str, *, tag: str = "") -> str:
        """Record ``entry`` (plain, bound inline)."""

    @abc.abstractmethod
    def fail(self, message: str) -> str:
        """Raise ValueError(message) (plain, bound inline)."""

    @abc.abstractmethod
    def hold(self, key: str) -> str:
        """Wait until the test releases ``key`` (a coroutine: a task)."""

    @abc.abstractmethod
    def fail_later(self, message: str) -> str:
        """Raise ValueError(message) after a turn of the loop (a coroutine)."""

    @abc.abstractmethod
    def block(self, key: str, *, suffix: str = "") -> str:
        """Block a pool thread until the test opens the gate (plain: the thread pool)."""

    @abc.abstractmethod
    def wrapped(self, value: int) -> int:
        """A coroutine behind a functools.wraps decorator."""

    @abc.abstractmethod
    def big(self, size: int) -> str:
        """A small request with a large answer (plain, bound inline)."""

    @abc.abstractmethod
    def odd(self) -> object:
        """Return what no serializer can encode (plain, bound inline)."""

    @abc.abstractmethod
    def odd_later(self) -> object:
        """The same, as a coroutine."""


def passing_through(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Probe(ProbeApi):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.releases: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event)
        self.gate = threading.Event()  # opened by the test (or after 5 s, so nothing hangs)
        self.threads: list[str] = []

    def note(self, entry: str, *, tag: str = "") -> str:
        self.events.append(f"note {entry}{tag}")
        return f"noted {entry}{tag}"

    def fail(self, message: str) -> str:
        raise ValueError(message)

    async def hold(self, key: str) -> str:  # type: ignore[override]
        self.events.append(f"start {key}")
        try:
            await self.releases[key].wait()
        except asyncio.CancelledError:
            self.events.append(f"cancelled {key}")
            if key.startswith("tidy"):  # a cleanup that takes a while
                await asyncio.sleep(0.05)
                self.events.append(f"tidied {key}")
            raise
        return f"held {key}"

    async def fail_later(self, message: str) -> str:  # type: ignore[override]
        await asyncio.sleep(0)
        raise ValueError(message)

    def block(self, key: str, *, suffix: str = "") -> str:
        self.events.append(f"start {key}")
        self.threads.append(threading.current_thread().name)
        self.gate.wait(5)
        self.events.append(f"end {key}")
        return f"blocked {key}{suffix}"

    @passing_through
    async def wrapped(self, value: int) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        return value + 1

    def big(self, size: int) -> str:
        self.events.append("big")
        return "x" * size

    def odd(self) -> object:
        return lambda: None

    async def odd_later(self) -> object:
        return lambda: None

    def release(self, key: str) -> None:
        self.releases[key].set()

    def started(self) -> set[str]:
        return {e.split()[1] for e in self.events if e.startswith("start ")}


ADDRESS = address_of(ProbeApi)


def call(rid: int, method: str, *args: object, **kwargs: object) -> bytes:
    """An encoded REQUEST frame calling ``ProbeApi.<method>``, as a client sends it."""
    body = SERIALIZER.encode_invocation(Invocation(ADDRESS, method, args, kwargs))
    return encode_frame(Frame(FrameType.REQUEST, rid, body, SERIALIZER.serializer_id))


def outcome(frame: Frame) -> Outcome:
    return SERIALIZER.decode_outcome(frame.body)


@asynccontextmanager
async def serving(probe: Probe | None = None, **settings: Any) -> AsyncIterator[Server]:
    """A started server with the probe bound (its plain methods inline but ``block``), closed
    after; and nothing inside it may fail where only the event loop would hear of it."""
    errors = loop_errors()
    server = Server(ServerConfig(**settings))
    server.bind(ProbeApi, probe or Probe(), inline=("note", "fail", "big", "odd"))
    await server.start()
    try:
        yield server
    finally:
        await server.aclose(grace=0.1)
    assert errors == []


def loop_errors() -> list[dict[str, Any]]:
    """What the running loop's exception handler is told from now on (a callback that raised,
    a protocol method that failed)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    return errors


class Peer:
    """A raw client: writes bytes, and a reader task collects every frame until EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.frames: list[Frame] = []
        self.eof = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read(reader))

    @classmethod
    async def connect(cls, server: Server) -> Peer:
        return cls(*await asyncio.open_connection(*server.address))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        codec = FrameCodec()
        try:
            while data := await reader.read(65536):
                codec.feed(data)
                self.frames.extend(codec.frames())
        except ConnectionError:
            pass
        self.writer.close()
        self.eof.set()

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    def answers(self) -> dict[int, Frame]:
        return {f.request_id: f for f in self.frames if f.type == FrameType.RESPONSE}

    def count(self, ftype: FrameType) -> int:
        return sum(f.type == ftype for f in self.frames)

    async def answer(self, rid: int, timeout: float = 5.0) -> Frame:
        await until(lambda: rid in self.answers(), timeout, f"the answer to request {rid}")
        return self.answers()[rid]

    async def closed(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame the server sent, once it has closed the connection."""
        await asyncio.wait_for(self.eof.wait(), timeout)
        return self.frames

    async def aclose(self) -> None:
        self.writer.transport.abort()
        await asyncio.wait_for(self.eof.wait(), 5)


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The server's log lines, each whole."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def kinds(frames: list[Frame]) -> list[tuple[FrameType, int, int]]:
    return [(FrameType(f.type), f.request_id, f.status) for f in frames]


# -- binding --------------------------------------------------------------------------------------


def test_bind_decides_how_each_method_runs_and_says_what_is_wrong_with_inline() -> None:
    server = Server()
    with pytest.raises(ApiDefinitionError) as caught:
        server.bind(ProbeApi, Probe(), inline="note")
    assert str(caught.value) == "inline= takes a collection of names, e.g. inline=('note',)"
    with pytest.raises(ApiDefinitionError) as caught:
        server.bind(ProbeApi, Probe(), inline=("nope", "note", "other"))
    assert str(caught.value) == "inline= names ['nope', 'other'], which ProbeApi does not declare"
    with pytest.raises(ApiDefinitionError) as caught:
        server.bind(ProbeApi, Probe(), inline=("note", "hold"))
    assert str(caught.value) == "Probe.hold is a coroutine: it runs as a task, never inline"
    with pytest.raises(ApiDefinitionError, match=r"^Probe.wrapped is a coroutine"):
        server.bind(ProbeApi, Probe(), inline=("wrapped",))
    with pytest.raises(ApiDefinitionError, match=r"^object does not implement ProbeApi\."):
        server.bind(ProbeApi, object(), inline=("note",))
    assert server.runs == {} and server.bindings == {}

    server.bind(ProbeApi, Probe())  # inline=False: every plain method goes to the pool
    runs = {name: how for (address, name), how in server.runs.items() if address == ADDRESS}
    assert runs == {"note": Run.THREAD, "fail": Run.THREAD, "block": Run.THREAD,
                    "big": Run.THREAD, "odd": Run.THREAD, "hold": Run.TASK,
                    "fail_later": Run.TASK, "wrapped": Run.TASK, "odd_later": Run.TASK}
    everything = Server()
    everything.bind(ProbeApi, Probe(), inline=True)  # all plain methods; coroutines stay tasks
    assert {name: how for (_, name), how in everything.runs.items()} == {
        "note": Run.INLINE, "fail": Run.INLINE, "block": Run.INLINE, "big": Run.INLINE,
        "odd": Run.INLINE, "hold": Run.TASK, "fail_later": Run.TASK, "wrapped": Run.TASK,
        "odd_later": Run.TASK}
    some = Server()
    some.bind(ProbeApi, Probe(), inline=["note"])
    assert some.runs[ADDRESS, "note"] is Run.INLINE and some.runs[ADDRESS, "fail"] is Run.THREAD


# -- calls: each way of running a method, each answer to its own request --------------------------


def test_each_way_of_running_a_method_answers_its_own_request_id() -> None:
    async def scenario() -> None:
        probe = Probe()
        probe.gate.set()
        async with serving(probe, max_workers=1) as server:
            peer = await Peer.connect(server)
            peer.send(call(11, "note", "inline", tag="!"), call(12, "block", "thread", suffix="?"),
                      call(13, "wrapped", 41), call(14, "fail", "inline broke"),
                      call(15, "fail_later", "task broke"), call(16, "nope"),
                      encode_frame(Frame(FrameType.REQUEST, 17, b"", codec=9)),
                      call(18, "note", "x", "extra"), call(19, "odd"), call(20, "odd_later"))
            answers = {rid: await peer.answer(rid) for rid in range(11, 21)}
            assert {rid: f.status for rid, f in answers.items()} == {
                11: Status.OK, 12: Status.OK, 13: Status.OK, 14: Status.INTERNAL,
                15: Status.INTERNAL, 16: Status.NOT_FOUND, 17: Status.BAD_REQUEST,
                18: Status.BAD_REQUEST, 19: Status.INTERNAL, 20: Status.INTERNAL}
            assert outcome(answers[11]) == Outcome("noted inline!")
            assert outcome(answers[12]) == Outcome("blocked thread?")
            assert probe.threads[0].startswith("rpc-method")  # the server's pool
            assert outcome(answers[13]) == Outcome(42)
            for rid, message in ((14, "inline broke"), (15, "task broke")):
                error = outcome(answers[rid]).error
                assert isinstance(error, ErrorInfo)
                assert (error.type, error.message, error.args) == (
                    "builtins.ValueError", message, (message,))
            assert outcome(answers[16]).error.message == "ProbeApi has no method 'nope'"  # type: ignore[union-attr]
            assert answers[17].body == (b"serializer id 9 is not enabled on this server "
                                        b"(enabled: pickle, protobuf)")
            assert outcome(answers[18]).error == ErrorInfo(
                "status.BAD_REQUEST", "note(): too many positional arguments")
            for rid, method in ((19, "odd"), (20, "odd_later")):  # the method, named
                assert answers[rid].body.startswith(
                    f"cannot encode the result of {method}() with pickle: ".encode())
            assert probe.events == ["note inline!", "start thread", "end thread"]
            assert server.calls_running == 0 and server.calls_by_api[ADDRESS] == 0
            assert not peer.eof.is_set() and server.connection_count == 1
            await peer.aclose()

    run(scenario)


def test_calls_are_counted_while_they_run_and_a_request_id_is_free_again_once_answered() -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe) as server:
            peer = await Peer.connect(server)
            peer.send(call(1, "hold", "a"), call(2, "hold", "b"), call(3, "block", "c"))
            await until(lambda: probe.started() == {"a", "b", "c"}, what="three calls run")
            assert server.calls_running == 3 and server.calls_by_api[ADDRESS] == 3
            probe.release("a")
            assert outcome(await peer.answer(1)) == Outcome("held a")
            assert server.calls_running == 2 and server.calls_by_api[ADDRESS] == 2
            probe.gate.set()
            assert outcome(await peer.answer(3)) == Outcome("blocked c")
            assert server.calls_running == 1 and server.calls_by_api[ADDRESS] == 1
            peer.frames.clear()
            peer.send(call(1, "hold", "d"), call(3, "note", "again"))  # ids answered: free
            assert outcome(await peer.answer(3)) == Outcome("noted again")
            await until(lambda: "d" in probe.started(), what="request 1 runs again")
            probe.release("b")
            probe.release("d")
            assert outcome(await peer.answer(2)) == Outcome("held b")
            assert outcome(await peer.answer(1)) == Outcome("held d")
            assert server.calls_running == 0 and server.calls_by_api[ADDRESS] == 0
            await peer.aclose()

    run(scenario)


def test_a_request_id_in_flight_closes_the_connection_and_cancels_its_calls(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe) as server:
            peer = await Peer.connect(server)
            with caplog.at_level(logging.INFO, logger=LOGGER):
                peer.send(call(7, "hold", "first"), call(1, "note", "before"),
                          call(7, "hold", "second"), call(2, "note", "after"))
                frames = await peer.closed()
            # The answer already made leaves first, then the reason, on request id 0.
            assert kinds(frames) == [(FrameType.RESPONSE, 1, Status.OK),
                                     (FrameType.RESPONSE, 0, Status.PROTOCOL_ERROR)]
            reason = ("request id 7 is already in flight on this connection: an id may be "
                      "reused only once answered")
            assert frames[1].body == reason.encode()
            assert logged(caplog) == [f"closing connection after protocol error: {reason}"]
            await until(lambda: server.connection_count == 0, what="the connection released")
            await until(lambda: "cancelled first" in probe.events, what="the call cancelled")
            assert probe.events == ["note before", "start first", "cancelled first"]
            assert server.calls_running == 0 and server.calls_by_api[ADDRESS] == 0
            assert server.connections == []

    run(scenario)


@pytest.mark.parametrize("frame, answer, message", [
    pytest.param(encode_frame(Frame(FrameType.REQUEST, 42, b"x" * 600)),
                 (FrameType.RESPONSE, 42, Status.TOO_LARGE),
                 "frame body of 600 bytes exceeds the limit of 512 bytes",
                 id="too-large"),
    pytest.param(encode_frame(Frame(FrameType.RESPONSE, 5, b"")),
                 (FrameType.RESPONSE, 0, Status.PROTOCOL_ERROR),
                 "unexpected frame type 2 from a client", id="response"),
    pytest.param(encode_frame(Frame(FrameType.GOAWAY, 0, b"idle")),
                 (FrameType.RESPONSE, 0, Status.PROTOCOL_ERROR),
                 "unexpected frame type 5 from a client", id="goaway"),
])
def test_a_bad_frame_closes_the_connection_after_the_answers_before_it(
        frame: bytes, answer: tuple[FrameType, int, int], message: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, max_frame_size=512) as server:
            peer = await Peer.connect(server)
            with caplog.at_level(logging.INFO, logger=LOGGER):
                peer.send(PONG_FRAME, call(1, "note", "before"), frame, call(2, "note", "after"))
                frames = await peer.closed()
            assert kinds(frames) == [(FrameType.RESPONSE, 1, Status.OK), answer]
            assert message in frames[1].body.decode()
            assert logged(caplog) == [
                f"closing connection after protocol error: {frames[1].body.decode()}"]
            assert probe.events == ["note before"]
            await until(lambda: server.connection_count == 0, what="the connection released")

    run(scenario)


# -- limits on calls running ----------------------------------------------------------------------


def test_a_connection_runs_max_concurrent_calls_and_reads_again_when_one_ends() -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, max_concurrent_calls=2, min_ping_interval=30) as server:
            peer = await Peer.connect(server)
            peer.send(call(1, "hold", "a"), call(2, "hold", "b"), call(3, "hold", "c"),
                      call(4, "note", "last"))
            await until(lambda: probe.started() == {"a", "b"}, what="two calls run")
            # At the limit the server stops reading, and says it is alive, only busy.
            await until(lambda: peer.count(FrameType.PONG) == 1, what="an unasked PONG")
            assert probe.started() == {"a", "b"} and server.calls_running == 2
            probe.release("a")
            assert outcome(await peer.answer(1)) == Outcome("held a")
            await until(lambda: "c" in probe.started(), what="the third call runs")
            assert "note last" not in probe.events  # two run again: the fourth waits
            probe.release("b")
            assert outcome(await peer.answer(4)) == Outcome("noted last")
            probe.release("c")
            assert outcome(await peer.answer(3)) == Outcome("held c")
            assert server.calls_running == 0
            assert peer.count(FrameType.PONG) == 2  # one each time it stopped reading
            await peer.aclose()

    run(scenario)


def test_past_max_server_calls_every_connection_waits_until_a_quarter_have_ended() -> None:
    """``max_server_calls=8``: the low-water mark is 6. Connection B's call waits while 8 run,
    and still while 7 do; it runs once 6 do. Twice, because the waiting list starts afresh."""

    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, max_server_calls=8, min_ping_interval=30) as server:
            a, b = await Peer.connect(server), await Peer.connect(server)

            async def fill_then_make_room(round_: int) -> None:
                keys = [f"{round_}-{i}" for i in range(8)]
                a.send(*(call(100 * round_ + i, "hold", key) for i, key in enumerate(keys)))
                await until(lambda: probe.started() >= set(keys), what="the server is full")
                assert server.full and server.calls_running == 8
                pongs = b.count(FrameType.PONG)
                b.send(call(round_, "note", f"b{round_}"))
                await until(lambda: b.count(FrameType.PONG) > pongs, what="B is pushed back")
                probe.release(keys[0])
                await a.answer(100 * round_)  # 7 run: B was not woken (it would have run first)
                assert f"note b{round_}" not in probe.events and server.calls_running == 7
                assert not server.full
                probe.release(keys[1])
                assert outcome(await b.answer(round_)) == Outcome(f"noted b{round_}")
                assert server.calls_running == 6
                for key in keys[2:]:
                    probe.release(key)
                await until(lambda: server.calls_running == 0, what="all calls end")

            await fill_then_make_room(1)
            await fill_then_make_room(2)
            await a.aclose()
            await b.aclose()

    run(scenario)


def test_while_pushing_back_the_server_pongs_unasked_and_suspends_the_idle_verdict(
        caplog: pytest.LogCaptureFixture) -> None:
    """Idle timeout 0.5 s, frame timeout 0.2 s: the connection stays silent for 0.8 s while the
    server pushes back with a frame waiting in its codec, and is neither closed as idle nor
    cut off for that frame. Afterwards the idle clock starts again from the pause."""

    async def scenario() -> None:
        probe = Probe()
        loop = asyncio.get_running_loop()
        async with serving(probe, max_concurrent_calls=1, idle_timeout=0.5, frame_timeout=0.2,
                           min_ping_interval=0.05) as server:
            peer = await Peer.connect(server)
            peer.send(call(1, "hold", "a"), call(2, "note", "waiting"))
            start = loop.time()
            await until(lambda: loop.time() - start > 0.8, what="0.8 s")
            assert not peer.eof.is_set() and peer.answers() == {}
            pongs = peer.count(FrameType.PONG)
            # One when it stopped, then one per min_ping_interval at most.
            assert 3 <= pongs <= (loop.time() - start) / 0.05 + 2, pongs
            probe.release("a")
            assert outcome(await peer.answer(2)) == Outcome("noted waiting")
            await asyncio.sleep(0.05)  # silent, but for much less than the idle timeout
            peer.send(call(3, "note", "later"))
            assert outcome(await peer.answer(3)) == Outcome("noted later")
            assert peer.count(FrameType.GOAWAY) == 0
            with caplog.at_level(logging.INFO, logger=LOGGER):
                frames = await peer.closed()  # now silent for good
            assert frames[-1].type == FrameType.GOAWAY and frames[-1].body == b"idle"
            assert logged(caplog) == ["client silent for 0.5 s: closing its connection"]

    run(scenario)


# -- heartbeat: idle connections, pings -----------------------------------------------------------


def test_a_client_that_speaks_is_kept_and_the_idle_timer_is_re_armed_until_it_falls_silent(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with serving(idle_timeout=0.4, min_ping_interval=0.01) as server:
            peer, silent = await Peer.connect(server), await Peer.connect(server)
            await until(lambda: server.connection_count == 2, what="the server attached them")
            start = loop.time()
            with caplog.at_level(logging.INFO, logger=LOGGER):
                for _ in range(7):  # 0.7 s, longer than the idle timeout, a PING every 0.1 s
                    peer.send(PING_FRAME)
                    await asyncio.sleep(0.1)
                assert not peer.eof.is_set(), loop.time() - start
                assert peer.count(FrameType.GOAWAY) == 0 and peer.count(FrameType.PONG) >= 6
                # The one that said nothing at all is gone, and told why.
                assert kinds(await silent.closed()) == [(FrameType.GOAWAY, 0, 0)]
                assert silent.frames[0].body == b"idle"
                frames = await peer.closed()
            assert frames[-1].type == FrameType.GOAWAY and frames[-1].body == b"idle"
            assert logged(caplog) == ["client silent for 0.4 s: closing its connection"] * 2
            await until(lambda: server.connection_count == 0, what="the connection released")

    run(scenario)


def test_pings_up_to_max_ping_strikes_are_answered_and_one_more_is_cut_off(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, max_ping_strikes=2, min_ping_interval=30) as server:
            peer = await Peer.connect(server)
            peer.send(PING_FRAME * 3, call(1, "note", "a"))  # the first ping is no strike
            await peer.answer(1)
            assert kinds(peer.frames) == [(FrameType.PONG, 0, 0)] * 3 + [
                (FrameType.RESPONSE, 1, Status.OK)]
            with caplog.at_level(logging.INFO, logger=LOGGER):
                peer.send(call(2, "note", "b"), PING_FRAME, call(3, "note", "c"))
                frames = await peer.closed()
            assert kinds(frames[4:]) == [(FrameType.RESPONSE, 2, Status.OK),
                                         (FrameType.GOAWAY, 0, 0)]
            assert frames[-1].body == b"too_many_pings"
            assert probe.events == ["note a", "note b"]  # nothing after the GOAWAY runs
            assert logged(caplog) == ["client pinged 4 times within 30 s: GOAWAY too_many_pings"]
            await until(lambda: server.connection_count == 0, what="the connection released")

    run(scenario)


def test_a_ping_after_min_ping_interval_clears_the_strikes() -> None:
    async def scenario() -> None:
        async with serving(max_ping_strikes=1, min_ping_interval=0.05) as server:
            peer = await Peer.connect(server)
            peer.send(PING_FRAME * 2)  # one strike
            await until(lambda: peer.count(FrameType.PONG) == 2, what="two PONGs")
            await asyncio.sleep(0.1)  # longer than min_ping_interval: the strikes are forgiven
            peer.send(PING_FRAME * 2, call(1, "note", "x"))  # one strike again, not two
            assert (await peer.answer(1)).status == Status.OK
            assert peer.count(FrameType.PONG) == 4 and peer.count(FrameType.GOAWAY) == 0
            await peer.aclose()

    run(scenario)


# -- clients that do not read their answers -----------------------------------------------------


async def deaf_client(server: Server, data: bytes) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
    """A client that sends ``data`` and reads nothing yet: its socket takes in 4 KiB at most."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, server.address)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(data)
    return reader, writer


#: Four calls whose answers, 16 MiB in all, are more than the sockets between the two hold.
BIG_CALLS = b"".join(call(i, "big", 4 << 20) for i in range(1, 5))


def test_a_client_that_does_not_read_its_answers_is_given_no_more_work_until_it_does() -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe) as server:
            reader, writer = await deaf_client(server, BIG_CALLS)
            # The first answers fill the write buffer: the calls after them wait, unread.
            await until(lambda: probe.events.count("big") >= 2, what="the first calls run")
            assert probe.events == ["big", "big"]
            peer = Peer(reader, writer)  # now it reads
            for rid in range(1, 5):
                assert len(outcome(await peer.answer(rid)).value) == 4 << 20
            assert probe.events == ["big"] * 4
            await peer.aclose()

    run(scenario)


def test_a_client_that_reads_nothing_is_let_go_after_the_idle_timeout_or_a_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    """Neither the GOAWAY nor the close can reach a client whose socket is full: the server
    does not wait for such a client to take its bytes, it aborts the connection."""

    async def idle() -> None:
        async with serving(idle_timeout=0.3) as server:
            _, writer = await deaf_client(server, BIG_CALLS)
            try:
                await until(lambda: server.connection_count == 1, what="attached")
                await until(lambda: server.connection_count == 0, 10, "the client let go")
            finally:
                writer.transport.abort()

    async def shutdown() -> None:
        # Two clients whose answers fill their sockets: one never reads again, the other starts
        # reading once the shutdown has begun. The slow one gets everything written to it;
        # the deaf one is not waited for beyond a second.
        probe = Probe()
        server = Server(ServerConfig(idle_timeout=30))
        server.bind(ProbeApi, probe, inline=True)
        await server.start()
        _, deaf = await deaf_client(server, BIG_CALLS)
        slow = await deaf_client(server, BIG_CALLS)
        try:
            await until(lambda: probe.events.count("big") == 4, what="both sockets full")
            conns = server.connections
            closing = asyncio.ensure_future(server.aclose(grace=0.05))
            peer = Peer(*slow)
            await asyncio.wait_for(closing, 10)
            frames = await peer.closed()
            assert kinds(frames[:3]) == [(FrameType.RESPONSE, 1, Status.OK),
                                         (FrameType.RESPONSE, 2, Status.OK),
                                         (FrameType.GOAWAY, 0, 0)]
            assert frames[2].body == b"shutdown"
            assert {f.status for f in frames[3:]} <= {Status.UNAVAILABLE}  # refused, unrun
            await until(lambda: all(c.lost.done() for c in conns), 5, "both clients let go")
            assert server.connection_count == 0 and probe.events.count("big") == 4
        finally:
            deaf.transport.abort()

    async def scenario() -> None:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await asyncio.gather(idle(), shutdown())
        assert logged(caplog) == ["client silent for 0.3 s: closing its connection"]

    run(scenario)


# -- the extension point of later stages ---------------------------------------------------------


def test_an_answer_from_a_subclass_on_frame_leaves_in_order_with_the_others() -> None:
    """v3.x adds frame types by overriding ``on_frame``; what it returns is sent."""

    class Extended(ServerConnection):
        def on_frame(self, frame: Frame) -> Frame | None:
            if frame.type == 9:
                return self.server.error_frame(frame.request_id, Status.OK, "type 9 seen")
            return super().on_frame(frame)

    class ExtendedServer(Server):
        def make_connection(self) -> ServerConnection:
            return Extended(self)

    async def scenario() -> None:
        server = ExtendedServer()
        server.bind(ProbeApi, Probe(), inline=("note",))
        await server.start()
        try:
            peer = await Peer.connect(server)
            peer.send(encode_frame(Frame(9, 5, b"")), call(1, "note", "x"))
            await peer.answer(1)
            assert kinds(peer.frames) == [(FrameType.RESPONSE, 5, Status.OK),
                                          (FrameType.RESPONSE, 1, Status.OK)]
            assert peer.frames[0].body == b"type 9 seen"
            await peer.aclose()
        finally:
            await server.aclose()

    run(scenario)


# -- frames that do not finish --------------------------------------------------------------------


def test_an_unfinished_frame_is_cut_off_after_frame_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, frame_timeout=0.3, idle_timeout=30) as server:
            whole = call(1, "note", "x")
            peer = await Peer.connect(server)
            with caplog.at_level(logging.INFO, logger=LOGGER):
                peer.send(whole[:10])
                assert await peer.closed() == []  # aborted: no answer, no reason
            assert logged(caplog) == ["frame incomplete after 0.3 s: closing"]

            # A frame completed starts the clock again for the next one, from its first bytes.
            peer = await Peer.connect(server)
            peer.send(whole[:10])
            await asyncio.sleep(0.15)
            loop = asyncio.get_running_loop()
            second_started = loop.time()
            peer.send(whole[10:], call(2, "note", "y")[:10])
            assert kinds(await peer.closed(timeout=10)) == [(FrameType.RESPONSE, 1, Status.OK)]
            assert loop.time() - second_started >= 0.29  # not the first frame's deadline
            assert probe.events == ["note x"]
            await until(lambda: server.connection_count == 0, what="the connections released")

        # A client silent in the middle of a frame is idle all the same: the frame timeout
        # does not put off the idle verdict.
        async with serving(frame_timeout=30, idle_timeout=0.3) as server:
            peer = await Peer.connect(server)
            peer.send(call(1, "note", "x")[:10])
            assert kinds(await peer.closed()) == [(FrameType.GOAWAY, 0, 0)]

    run(scenario)


# -- connections: admitted, refused, lost ---------------------------------------------------------


def test_past_max_connections_a_client_is_told_why_and_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(max_connections=1) as server:
            first = await Peer.connect(server)
            await until(lambda: server.connection_count == 1, what="the first is attached")
            assert len(server.connections) == 1
            with caplog.at_level(logging.WARNING, logger="stages.v1_0.server"):
                second = await Peer.connect(server)
                frames = await second.closed()
            where = second.writer.get_extra_info("sockname")
            assert [r.getMessage() for r in caplog.records] == [
                f"refusing a connection from {where}: 1 connections open (max_connections)"]
            assert kinds(frames) == [(FrameType.RESPONSE, 0, Status.UNAVAILABLE)]
            assert frames[0].body == (b"too many connections (1 open, max_connections); "
                                      b"try again later")
            first.send(call(1, "note", "still served"))
            assert (await first.answer(1)).status == Status.OK
            assert server.connection_count == 1
            await first.aclose()

    run(scenario)


def test_a_lost_connections_calls_are_cancelled_and_queued_pool_calls_never_start() -> None:
    async def scenario() -> None:
        probe = Probe()
        async with serving(probe, max_workers=1) as server:  # which checks the loop's errors
            peer = await Peer.connect(server)
            peer.send(call(1, "hold", "task"), call(2, "block", "running"),
                      call(3, "block", "queued"))
            await until(lambda: probe.started() == {"task", "running"}, what="two calls run")
            assert server.calls_running == 3
            await peer.aclose()
            await until(lambda: server.connection_count == 0, what="the connection released")
            await until(lambda: "cancelled task" in probe.events, what="the task cancelled")
            await until(lambda: server.calls_by_api[ADDRESS] == 0, what="the calls counted off")
            assert server.calls_running == 0
            probe.gate.set()
            await until(lambda: "end running" in probe.events, what="the thread ends")
            # The pool's queue is first in, first out: once this has run, so has "queued", or
            # it never will.
            await asyncio.get_running_loop().run_in_executor(server.pool, lambda: None)
            assert "start queued" not in probe.events
            assert server.calls_running == 0 and server.calls_by_api[ADDRESS] == 0

    run(scenario)


# -- graceful shutdown ----------------------------------------------------------------------------


def test_shutdown_says_goaway_refuses_new_calls_unrun_and_ends_when_the_client_leaves() -> None:
    async def scenario() -> None:
        probe = Probe()
        server = Server(ServerConfig(shutdown_grace=30))
        server.bind(ProbeApi, probe, inline=("note",))
        await server.start()
        address = server.address
        peer = await Peer.connect(server)
        peer.send(call(9, "hold", "tidy"))
        await until(lambda: probe.started() == {"tidy"}, what="a call in flight")
        closing = asyncio.ensure_future(server.aclose())
        await until(lambda: peer.count(FrameType.GOAWAY) == 1, what="GOAWAY")
        assert peer.frames[0].body == b"shutdown"
        peer.send(call(1, "note", "late"), call(2, "hold", "late"))
        for rid in (1, 2):
            answer = await peer.answer(rid)
            assert answer.status == Status.UNAVAILABLE
            assert answer.body == b"server is shutting down; the call was not run"
        assert probe.events == ["start tidy"] and not closing.done()
        await peer.aclose()  # the client leaves: the shutdown ends, long before its grace
        await asyncio.wait_for(closing, 5)
        # ...and only once the calls it cancelled have finished.
        assert probe.events == ["start tidy", "cancelled tidy", "tidied tidy"]
        with pytest.raises(OSError):
            await asyncio.open_connection(*address)
        await asyncio.wait_for(server.aclose(), 1)  # a second close has nothing to do

    run(scenario)


@pytest.mark.parametrize("where", ["argument", "config"])
def test_shutdown_cancels_calls_past_the_grace_and_leaves_pool_threads_running(
        where: str) -> None:
    async def scenario() -> None:
        probe = Probe()
        grace = 0.2 if where == "config" else 30
        server = Server(ServerConfig(shutdown_grace=grace))
        server.bind(ProbeApi, probe)
        await server.start()
        peer = await Peer.connect(server)
        peer.send(call(1, "hold", "task"), call(2, "block", "thread"))
        await until(lambda: probe.started() == {"task", "thread"}, what="both calls run")
        pool = server.pool
        started = time.monotonic()
        await asyncio.wait_for(server.aclose(grace=0.2 if where == "argument" else None), 5)
        assert time.monotonic() - started < 4.5
        frames = await peer.closed()
        assert kinds(frames) == [(FrameType.GOAWAY, 0, 0)] and frames[0].body == b"shutdown"
        assert "cancelled task" in probe.events
        assert "end thread" not in probe.events  # the pool did not wait for its thread
        assert server.connection_count == 0 and server.calls_running == 0
        probe.gate.set()
        await asyncio.to_thread(pool.shutdown, wait=True)
        assert probe.events[-1] == "end thread"
        # The pool shut down is not used again: a server started anew makes another.
        await server.start()
        peer = await Peer.connect(server)
        peer.send(call(3, "block", "again"))
        assert outcome(await peer.answer(3)) == Outcome("blocked again")
        await peer.aclose()
        await server.aclose()

    run(scenario)
