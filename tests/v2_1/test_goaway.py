"""After GOAWAY, new calls are refused and *not run*: a client may safely send them elsewhere.

A raw client keeps one call in flight (so the server, shutting down gracefully, keeps the
connection open for it), reads the server's GOAWAY, and then sends more calls. They must be
answered UNAVAILABLE, and the methods must not have run: the implementation here records every
call it runs, and the record is checked, not only the status.
"""

from __future__ import annotations

import abc
import asyncio

from support import run

from stages.v2_0.api import address_of
from stages.v2_0.serializers import Invocation, PickleSerializer
from stages.v2_1 import (
    Frame,
    FrameCodec,
    FrameType,
    GoAway,
    Server,
    ServerConfig,
    Status,
    rpc_api,
)
from stages.v2_1.protocol import NEED_DATA, encode_frame

SERIALIZER = PickleSerializer()


@rpc_api(namespace="tests")
class LedgerApi(abc.ABC):
    @abc.abstractmethod
    def record(self, entry: str) -> int:
        """Append ``entry``; return how many entries there are."""

    @abc.abstractmethod
    def record_later(self, entry: str) -> int:
        """The same, as a coroutine (run as a task)."""

    @abc.abstractmethod
    def hold(self) -> str:
        """Stay in flight until the test releases it."""


class Ledger(LedgerApi):
    def __init__(self) -> None:
        self.entries: list[str] = []
        self.release = asyncio.Event()

    def record(self, entry: str) -> int:
        self.entries.append(entry)
        return len(self.entries)

    async def record_later(self, entry: str) -> int:  # type: ignore[override]
        self.entries.append(entry)
        await asyncio.sleep(0)
        return len(self.entries)

    async def hold(self) -> str:  # type: ignore[override]
        await self.release.wait()
        return "released"


def request(request_id: int, method: str, *args: object) -> bytes:
    body = SERIALIZER.encode_invocation(Invocation(address_of(LedgerApi), method, args))
    return encode_frame(Frame(FrameType.REQUEST, request_id, body, SERIALIZER.serializer_id))


class FrameReader:
    """Frames from a stream reader, one at a time."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.codec = FrameCodec()

    async def next(self) -> Frame | None:
        """The next frame, or None at the end of the stream."""
        while (frame := self.codec.next_frame()) is NEED_DATA:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.codec.feed(data)
        return frame

    async def answers(self, count: int) -> dict[int, Frame]:
        found: dict[int, Frame] = {}
        while len(found) < count:
            frame = await self.next()
            assert frame is not None, f"connection closed after {len(found)} of {count} answers"
            if frame.type == FrameType.RESPONSE:
                found[frame.request_id] = frame
        return found


def test_calls_that_arrive_after_goaway_are_answered_unavailable_and_not_run() -> None:
    async def scenario() -> None:
        ledger = Ledger()
        server = Server(ServerConfig(shutdown_grace=10))
        server.bind(LedgerApi, ledger)
        await server.start()
        reader, writer = await asyncio.open_connection(*server.address)
        frames = FrameReader(reader)

        # Before the shutdown: calls run (which proves the ledger sees them).
        writer.write(request(1, "hold") + request(2, "record", "before")
                     + request(3, "record_later", "before, later"))
        before = await frames.answers(2)
        assert {rid: f.status for rid, f in before.items()} == {2: Status.OK, 3: Status.OK}
        assert ledger.entries == ["before", "before, later"]

        closing = asyncio.ensure_future(server.aclose())
        goaway = await frames.next()
        assert goaway is not None and goaway.type == FrameType.GOAWAY
        assert goaway.body == GoAway.SHUTDOWN.value.encode()

        # After it: refused, and not run, plain method or coroutine alike.
        writer.write(request(4, "record", "after") + request(5, "record_later", "after, later"))
        after = await frames.answers(2)
        for rid in (4, 5):
            assert after[rid].status == Status.UNAVAILABLE
            assert b"not run" in after[rid].body
        await asyncio.sleep(0)  # a task started by mistake would have run its first step now
        assert ledger.entries == ["before", "before, later"]
        assert not closing.done()  # the call in flight keeps the connection open...

        ledger.release.set()
        held = await frames.answers(1)
        assert held[1].status == Status.OK  # ...and is answered
        # Its calls answered, the client closes, as a client does after a GOAWAY; the server's
        # shutdown then ends without waiting out its grace.
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(closing, 5)
        assert ledger.entries == ["before", "before, later"]

    run(scenario)
