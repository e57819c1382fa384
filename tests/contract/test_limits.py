"""Contract tests every stage must keep passing: limits that hold whatever a client sends.

* The frame timeout measures one frame: a client that streams frames quickly is never cut off,
  however its reads are split; one that stops in the middle of a frame is, ``frame_timeout``
  after that frame started.
* An answer over the frame cap is answered TOO_LARGE for its own request, at the limit and one
  byte past it, and the connection goes on.
* A client that sends and never reads is pushed back: the server stops reading it, its memory
  stays bounded (peak RSS from /proc), and other clients are served.
* Past ``max_connections`` a new connection is refused, and the open ones go on.

Stage by stage the same raw bytes go over a real socket. The servers run as processes
(``python -m stages.<stage> server --frame-timeout ...``); v2.0's command line has no limit
options, so where a limit must be set its server runs in a thread of this process, still on a
real socket. The answer-size tests need a method whose answer has an exact size, a test-only
service, so they run the stage's ``new_server()`` in this process, as test_bad_frames does.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stages.harness.process import ServerProcess
from stages.harness.threads import BackgroundServer
from stages.v1_0.protocol import Frame, FrameCodec, encode_frame
from stages.v2_0.api import address_of, rpc_api
from stages.v2_0.errors import Status
from stages.v2_0.serializers import Invocation, Outcome, PickleSerializer
from stages.v2_0.user_stub import UserApi

STAGES = ["v1_0", "v2_0", "v2_1"]
#: Detection may take the timeout plus this much (timer tick, scheduling, a busy CI box).
MARGIN = 0.7


# -- requests, as raw frames ----------------------------------------------------------------------


def get_user(stage: str, request_id: int) -> bytes:
    """An encoded request for user 1, in the stage's own format."""
    if stage == "v1_0":
        return encode_frame(Frame(1, request_id, b"userService:getUser?id=1"))
    body = PickleSerializer().encode_invocation(Invocation(address_of(UserApi), "get_user", (1,)))
    return encode_frame(Frame(1, request_id, body, codec=PickleSerializer.serializer_id))


@contextmanager
def serving(stage: str, output: list[str] | None = None,
            **limits: float) -> Iterator[tuple[str, int]]:
    """The address of a ``stage`` server (its demo services) with these ServerConfig limits.

    Args:
        output: receives what a server process printed, once it has stopped.
    """
    if stage == "v2_0":  # no limit options on v2.0's command line: a server in a thread
        config = importlib.import_module("stages.v2_0.config").ServerConfig(**limits)
        new_server = importlib.import_module("stages.v2_0.cli").new_server
        with BackgroundServer(lambda: new_server(config)) as bg:
            yield bg.address
        return
    args = [item for name, value in limits.items()
            for item in (f"--{name.replace('_', '-')}", str(value))]
    proc = ServerProcess(f"stages.{stage}", args)
    try:
        with proc:
            yield proc.address
    finally:
        if output is not None:
            output.extend(proc.output)


@contextmanager
def connect(address: tuple[str, int]) -> Iterator[socket.socket]:
    with socket.create_connection(address, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write leaves at once
        yield sock


def read_frames(sock: socket.socket, count: int | None = None) -> tuple[list[Frame], bool]:
    """Frames read until ``count`` have arrived, or until the server closes (then True).

    The socket's timeout (5 s) bounds every wait: a server that neither answers nor closes
    fails the test instead of hanging it.
    """
    codec = FrameCodec()
    frames: list[Frame] = []
    while count is None or len(frames) < count:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return frames, True
        codec.feed(data)
        frames.extend(codec.frames())
    return frames, False


# -- 1. the frame timeout measures one frame ------------------------------------------------------

FRAME_TIMEOUT = 0.3
#: Seconds between two writes of the streaming client: every frame arrives within this.
PACE = 0.03


def stream_ending_mid_frame(sock: socket.socket, frames: list[bytes]) -> tuple[bytes, float]:
    """Send ``frames``, one write every :data:`PACE` s, each write ending in the middle of a
    frame (the rest of one frame, then half of the next): no read the server makes ever ends
    on a frame boundary. Returns the half frame not yet sent and the time of the last write.

    Fails the test at once if the server closes the connection meanwhile.
    """
    stream = b"".join(frames)
    size = len(frames[0])
    sent = 0
    start = time.monotonic()
    for i in range(len(frames)):
        cut = i * size + size // 2  # in the middle of frame i
        try:
            sock.sendall(stream[sent:cut])
        except OSError as exc:
            pytest.fail(f"the server closed the connection after {time.monotonic() - start:.2f} "
                        f"s of a healthy stream: {exc!r}")
        sent = cut
        time.sleep(PACE)  # the client's pace is the scenario, not a wait for the server
    return stream[sent:], time.monotonic()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stage", STAGES)
def test_a_client_that_streams_frames_is_never_cut_off(stage: str) -> None:
    """Writes every 30 ms, each ending mid-frame, for three frame timeouts: each frame arrives
    within 30 ms, so the connection stays open and every request is answered."""
    count = 30
    with serving(stage, frame_timeout=FRAME_TIMEOUT) as address, connect(address) as sock:
        start = time.monotonic()
        rest, _ = stream_ending_mid_frame(sock, [get_user(stage, i) for i in range(1, count + 1)])
        assert time.monotonic() - start > 2.5 * FRAME_TIMEOUT  # the stream outlived the timeout
        sock.sendall(rest)
        answers, closed = read_frames(sock, count)
        assert not closed, f"closed after {len(answers)} answers"
        assert [a.request_id for a in answers] == list(range(1, count + 1))
        assert all(a.status == Status.OK for a in answers)
        sock.sendall(get_user(stage, 99))  # and it is still open
        [again], _ = read_frames(sock, 1)
        assert (again.request_id, again.status) == (99, Status.OK)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stage", STAGES)
def test_a_client_that_stalls_mid_frame_is_cut_off_one_frame_timeout_later(stage: str) -> None:
    """The same stream for 1.5 frame timeouts, then silence with half a frame sent: every
    complete frame is answered, and the connection closes ``frame_timeout`` after that half
    frame started arriving, not before."""
    count = 15
    with serving(stage, frame_timeout=FRAME_TIMEOUT) as address, connect(address) as sock:
        _, stalled_at = stream_ending_mid_frame(sock, [get_user(stage, i)
                                                       for i in range(1, count + 1)])
        answers, closed = read_frames(sock)
        elapsed = time.monotonic() - stalled_at
        assert closed
        assert [a.request_id for a in answers] == list(range(1, count))  # all complete frames
        assert FRAME_TIMEOUT - PACE - 0.02 < elapsed < FRAME_TIMEOUT + MARGIN, elapsed


# -- 2. an answer over the frame cap --------------------------------------------------------------

CAP = 4096


@rpc_api(namespace="tests")
class SizedApi(abc.ABC):
    """Answers of a chosen size, from each way a v2.1 server runs a method."""

    @abc.abstractmethod
    def inline(self, n: int) -> bytes: ...

    @abc.abstractmethod
    def thread(self, n: int) -> bytes: ...

    @abc.abstractmethod
    def task(self, n: int) -> bytes: ...


class PlainSized(SizedApi):
    """v2.0 runs plain methods only."""

    def inline(self, n: int) -> bytes:
        return b"x" * n

    def thread(self, n: int) -> bytes:
        return b"x" * n

    def task(self, n: int) -> bytes:
        return b"x" * n


class Sized(PlainSized):
    async def task(self, n: int) -> bytes:  # type: ignore[override]
        await asyncio.sleep(0)
        return b"x" * n


def pickled_bytes_size(n: int) -> int:
    return len(PickleSerializer().encode_outcome(Outcome(b"x" * n)))


def v2_sized_request(method: str, request_id: int, answer_size: int) -> bytes:
    """A request whose answer body (an Outcome of bytes, pickled) is ``answer_size`` bytes."""
    n = answer_size - (pickled_bytes_size(answer_size) - answer_size)
    assert pickled_bytes_size(n) == answer_size
    body = PickleSerializer().encode_invocation(Invocation(address_of(SizedApi), method, (n,)))
    return encode_frame(Frame(1, request_id, body, codec=PickleSerializer.serializer_id))


def v1_sized_request(method: str, request_id: int, answer_size: int) -> bytes:
    # The answer is "v=" and n letters.
    return encode_frame(Frame(1, request_id, f"sized:make?n={answer_size - 2}".encode()))


def sized_server(stage: str) -> Any:
    cli = importlib.import_module(f"stages.{stage}.cli")
    config = importlib.import_module(f"stages.{stage}.config").ServerConfig(max_frame_size=CAP)
    server = cli.new_server(config)
    if stage == "v1_0":
        server.register("sized", {"make": lambda n: {"v": "x" * int(n)}})
    elif stage == "v2_0":
        server.bind(SizedApi, PlainSized())
    else:
        server.bind(SizedApi, Sized(), inline=("inline",))
    return server


SIZED: dict[str, tuple[Callable[[str, int, int], bytes], list[str]]] = {
    "v1_0": (v1_sized_request, ["make"]),
    "v2_0": (v2_sized_request, ["inline"]),
    "v2_1": (v2_sized_request, ["inline", "thread", "task"]),
}


@pytest.mark.parametrize("stage", STAGES)
def test_an_answer_over_the_frame_cap_is_answered_too_large_and_the_connection_goes_on(
        stage: str) -> None:
    """On one connection: an answer of exactly the cap, one of a byte more, a small one. The
    first and last are answered as usual, the middle one with TOO_LARGE and a short message,
    and the connection stays open for the next request. (v2.1: each way a method runs.)"""
    make_request, methods = SIZED[stage]

    async def scenario() -> None:
        server = sized_server(stage)
        async with server:
            reader, writer = await asyncio.open_connection(*server.address)
            for i, method in enumerate(methods):
                rid = 10 * i
                writer.write(make_request(method, rid + 1, CAP)
                             + make_request(method, rid + 2, CAP + 1) + get_user(stage, rid + 3))
                answers = {a.request_id: a for a in await read_async(reader, 3)}
                at_cap, over, small = (answers[rid + k] for k in (1, 2, 3))
                assert at_cap.status == Status.OK and len(at_cap.body) == CAP
                assert over.status == Status.TOO_LARGE and over.codec == 0
                message = over.body.decode()
                assert f"{CAP + 1} bytes" in message and f"{CAP} bytes" in message, message
                assert len(message) < 200, message
                assert small.status == Status.OK
                assert server.connection_count == 1  # the same connection throughout
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 20))


async def read_async(reader: asyncio.StreamReader, count: int) -> list[Frame]:
    codec = FrameCodec(max_frame_size=CAP)
    frames: list[Frame] = []
    while len(frames) < count:
        data = await reader.read(65536)
        assert data, f"the server closed the connection after {len(frames)} answers"
        codec.feed(data)
        frames.extend(codec.frames())
    return frames


@pytest.mark.parametrize("stage", STAGES)
def test_every_frame_a_server_sends_fits_its_cap_even_an_error(stage: str) -> None:
    """With a cap smaller than an error message, the TOO_LARGE answer is cut to the cap: the
    server never sends a frame its own limit forbids."""
    cli = importlib.import_module(f"stages.{stage}.cli")
    server = cli.new_server(importlib.import_module(f"stages.{stage}.config")
                            .ServerConfig(max_frame_size=20))
    answer = Frame(2, 5, b"x" * 21)
    codec = FrameCodec(max_frame_size=20)
    codec.feed(server.encode_answer(codec, answer))
    error = codec.next_frame()
    assert isinstance(error, Frame)
    assert (error.request_id, error.status, len(error.body)) == (5, Status.TOO_LARGE, 20)
    exact = Frame(2, 6, b"x" * 20)
    codec.feed(server.encode_answer(codec, exact))
    assert codec.next_frame() == exact


# -- 5. bounded buffering: a client that never reads, too many connections -----------------------


def echo_request(stage: str, request_id: int, size: int) -> bytes:
    """A request to echo ``size`` bytes of payload, in the stage's own format."""
    if stage == "v1_0":
        return encode_frame(Frame(1, request_id, b"userService:echo?text=" + b"x" * size))
    inventory = importlib.import_module("stages.v2_0.user_stub").InventoryApi
    body = PickleSerializer().encode_invocation(Invocation(address_of(inventory), "echo",
                                                           (b"x" * size,)))
    return encode_frame(Frame(1, request_id, body, codec=PickleSerializer.serializer_id))


def peak_rss(pid: int) -> int:
    """The peak resident memory of a process so far, in bytes (VmHWM, "high-water mark")."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def push_until_stalled(sock: socket.socket, block: bytes, budget: int,
                       stall: float = 0.5) -> tuple[int, bool]:
    """Send ``block`` again and again without reading a byte, until the socket has taken no
    byte for ``stall`` seconds (True) or ``budget`` bytes were sent (False). Returns the
    bytes sent and whether it stalled.

    A stall is how a client sees that the server stopped reading: the kernel buffers on both
    sides are full, and nothing drains them.
    """
    sock.setblocking(False)
    view = memoryview(block)
    sent = 0
    while sent < budget:
        _, writable, _ = select.select([], [sock], [], stall)
        if not writable:
            return sent, True
        try:
            sent += sock.send(view[sent % len(block):])
        except BlockingIOError:
            continue
    return sent, False


#: Payload of each echo request of the client that never reads.
ECHO_SIZE = 60_000
#: What the server may hold for that client above its baseline: a read (256 KiB), a partial
#: frame (60 KB), the write buffer up to its high-water mark (64 KiB) and one chunk of answers
#: (v2.1: 32 of 60 KB), and the decoded copies of a few requests: about 3 MiB; 8 MiB leaves
#: room for the allocator. Without push back it grows with every byte the client sends.
MEMORY_BOUND = 8 * 1024 * 1024
#: What the client tries to send. Without push back all of it is read and answered.
PUSH_BUDGET = 256 * 1024 * 1024


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage", STAGES)
def test_a_client_that_never_reads_is_pushed_back_and_memory_stays_bounded(stage: str) -> None:
    """A client sends echo requests as fast as it can and reads no answer. The server must stop
    reading it (the client's sends stall long before it has sent everything), its peak memory
    must stay within :data:`MEMORY_BOUND` of where it started, and another client is served
    meanwhile as if nothing happened."""
    block = b"".join(echo_request(stage, i, ECHO_SIZE) for i in range(1, 65))
    with ServerProcess(f"stages.{stage}") as proc:
        with connect(proc.address) as warm:  # the first calls allocate what any call needs
            warm.sendall(b"".join(echo_request(stage, i, ECHO_SIZE) for i in range(1, 9)))
            read_frames(warm, 8)
        baseline = peak_rss(proc.pid)
        with connect(proc.address) as greedy:
            sent, stalled = push_until_stalled(greedy, block, PUSH_BUDGET)
            growth = peak_rss(proc.pid) - baseline
            print(f"{stage}: sent {sent / 2**20:.1f} MiB before the server stopped reading; "
                  f"peak RSS {baseline / 2**20:.1f} MiB + {growth / 2**20:.1f} MiB")
            assert stalled, f"the server read all {sent / 2**20:.0f} MiB and answered it"
            assert growth < MEMORY_BOUND, f"peak RSS grew by {growth / 2**20:.1f} MiB"
            with connect(proc.address) as other:
                start = time.monotonic()
                other.sendall(get_user(stage, 7))
                [answer], _ = read_frames(other, 1)
                assert (answer.request_id, answer.status) == (7, Status.OK)
                assert time.monotonic() - start < 0.5
            assert peak_rss(proc.pid) - baseline < MEMORY_BOUND


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stage", STAGES)
def test_connections_past_max_connections_are_refused_and_the_first_ones_keep_working(
        stage: str, caplog: pytest.LogCaptureFixture) -> None:
    """``max_connections=2``: a third connection is told UNAVAILABLE (request id 0) and closed,
    with a line in the server's log; the two first still work; once one closes, a new one is
    admitted."""
    output: list[str] = []
    with serving(stage, max_connections=2, output=output) as address, \
            connect(address) as first, connect(address) as second:
        for rid, sock in enumerate((first, second), start=1):  # answered: both are admitted
            sock.sendall(get_user(stage, rid))
            [answer], _ = read_frames(sock, 1)
            assert answer.status == Status.OK
        with connect(address) as third:
            frames, closed = read_frames(third)
        assert closed
        [refusal] = frames
        assert (refusal.request_id, refusal.status) == (0, Status.UNAVAILABLE)
        assert b"too many connections" in refusal.body
        for rid, sock in enumerate((first, second), start=3):
            sock.sendall(get_user(stage, rid))
            [answer], _ = read_frames(sock, 1)
            assert (answer.request_id, answer.status) == (rid, Status.OK)
        second.close()
        deadline = time.monotonic() + 5
        while True:  # the server forgets the closed connection soon after: then room is made
            with connect(address) as fourth:
                fourth.sendall(get_user(stage, 9))
                frames, _ = read_frames(fourth, 1)
            if frames[0].request_id == 9:
                break
            assert time.monotonic() < deadline, "no room made by closing a connection"
        assert frames[0].status == Status.OK
    log = "".join(output) + caplog.text
    assert "refusing a connection" in log and "max_connections" in log
