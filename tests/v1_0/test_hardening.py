"""v1.0 against careless and hostile clients, on a real server process.

The limits every stage shares (frame timeout per frame, an answer over the cap, a client that
never reads, too many connections) are in tests/contract/test_limits.py; here are v1.0's own
cases: an answer over the cap with the demo service as it is, through its command line, and
the configuration's refusal of infinite and NaN durations.
"""

from __future__ import annotations

import asyncio
import math
import socket

import pytest
from support import run

from stages.harness.process import ServerProcess
from stages.v1_0 import (
    Client,
    ClientConfig,
    ConfigError,
    Frame,
    FrameCodec,
    RemoteError,
    ServerConfig,
    Status,
    encode_frame,
)
from stages.v1_0.cli import new_server
from stages.v1_0.server import ServerConnection

CAP = 4096


def echo_with_answer_of(size: int, request_id: int) -> bytes:
    """A raw echo request whose answer body is exactly ``size`` bytes, for ``size`` near
    :data:`CAP`, while the request itself is far smaller.

    The answer is ``text=`` and the text URL-encoded. A raw request may carry ``@`` as it is,
    and the answer encodes each one as ``%40``, three bytes for one: so a request of ~1.4 KB
    asks for an answer of any size up to ~4 KB. (The v1.0 client would encode the ``@`` in
    the request too; a raw socket does not have to.)
    """
    signs, letters = divmod(size - len("text="), 3)
    text = b"@" * signs + b"x" * letters
    return encode_frame(Frame(1, request_id, b"userService:echo?text=" + text))


def read_frames(sock: socket.socket, count: int) -> list[Frame]:
    codec = FrameCodec()
    frames: list[Frame] = []
    while len(frames) < count:
        data = sock.recv(65536)  # the socket's timeout bounds the wait
        assert data, f"the server closed the connection after {len(frames)} answers"
        codec.feed(data)
        frames.extend(codec.frames())
    return frames


@pytest.mark.timeout(30)
def test_an_answer_over_max_frame_size_is_answered_too_large_and_the_connection_goes_on() -> None:
    """``--max-frame-size 4096``: on one connection an answer of exactly 4096 bytes is sent, one
    of 4097 is replaced by TOO_LARGE for its request id, and the next request is answered. The
    v1.0 client sees a RemoteError with status TOO_LARGE."""
    with ServerProcess("stages.v1_0", ["--max-frame-size", str(CAP)]) as proc:
        with socket.create_connection(proc.address, timeout=5) as sock:
            requests = [echo_with_answer_of(CAP, 1), echo_with_answer_of(CAP + 1, 2),
                        encode_frame(Frame(1, 3, b"userService:getUser?id=7"))]
            assert all(len(r) < CAP for r in requests)
            sock.sendall(b"".join(requests))
            at_cap, over, user = read_frames(sock, 3)
            assert (at_cap.request_id, at_cap.status, len(at_cap.body)) == (1, Status.OK, CAP)
            assert (over.request_id, over.status) == (2, Status.TOO_LARGE)
            assert over.body == (f"the answer is {CAP + 1} bytes, more than this server sends "
                                 f"(max_frame_size {CAP} bytes)").encode()
            assert (user.request_id, user.status) == (3, Status.OK)
            sock.sendall(encode_frame(Frame(1, 4, b"userService:getUser?id=8")))
            [again] = read_frames(sock, 1)
            assert (again.request_id, again.status) == (4, Status.OK)

        async def scenario() -> None:
            client = Client(*proc.address)
            with pytest.raises(RemoteError) as refused:
                await client.call("userService", "echo", text="x" * (CAP - 5 + 1))
            assert refused.value.status == Status.TOO_LARGE
            assert await client.call("userService", "echo", text="ok") == {"text": "ok"}

        run(scenario)


@pytest.mark.parametrize("name", ["frame_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", [math.inf, math.nan, -math.inf])
def test_durations_must_be_finite(name: str, value: float) -> None:
    """An infinite timer never fires, and NaN breaks the order of the loop's timer heap: both
    are refused when the configuration is built."""
    with pytest.raises(ConfigError, match="finite"):
        ServerConfig(**{name: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite"):
        ClientConfig(timeout=value)


@pytest.mark.parametrize("kwargs", [{"max_connections": 0}, {"max_connections": 1.5},
                                    {"max_connections": True}, {"max_frame_size": 4096.0},
                                    {"max_frame_size": math.inf}])
def test_counts_must_be_whole_numbers(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="int >= 1"):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_the_smallest_values_at_the_limit_are_accepted() -> None:
    config = ServerConfig(frame_timeout=1e-9, idle_timeout=1e300, max_connections=1,
                          max_frame_size=1)
    assert config.max_connections == 1


def test_pause_writing_stops_reading_until_resume_writing() -> None:
    """Sans sockets: the answers of a read are written until the transport says its buffer is
    full (pause_writing); the requests after that wait in the codec, reading stops, and
    resume_writing answers them and reads again."""

    async def scenario() -> None:
        conn = ServerConnection(new_server())
        events: list[str] = []

        class Transport(asyncio.Transport):
            def write(self, data: bytes | bytearray | memoryview) -> None:
                events.append("write")
                if events.count("write") == 2:
                    conn.pause_writing()  # as asyncio would

            def is_closing(self) -> bool:
                return False

            def pause_reading(self) -> None:
                events.append("pause_reading")

            def resume_reading(self) -> None:
                events.append("resume_reading")

            def get_extra_info(self, name: str, default: object = None) -> object:
                return ("127.0.0.1", 1) if name == "peername" else default

            def close(self) -> None:
                events.append("close")

        conn.connection_made(Transport())
        request = encode_frame(Frame(1, 1, b"userService:getUser?id=1"))
        conn.data_received(request * 5)
        assert events == ["write", "write", "pause_reading"]
        assert conn.codec.buffered == 3 * len(request)
        conn.resume_writing()
        assert events[3:] == ["write"] * 3 + ["resume_reading"]
        assert conn.codec.buffered == 0
        conn.connection_lost(None)

    run(scenario)
