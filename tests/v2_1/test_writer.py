"""BatchedWriter: which frames leave in which system call, without sockets or a running loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from stages.v2_1.writer import BatchedWriter


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class ManualLoop:
    """call_soon only queues; run() plays the end of the turn."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], Any]] = []

    def call_soon(self, callback: Callable[[], Any]) -> None:
        self.soon.append(callback)

    def end_turn(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()


class Writer(BatchedWriter):
    def __init__(self) -> None:
        self.transport = cast(asyncio.Transport, RecordingTransport())
        self._loop = cast(asyncio.AbstractEventLoop, ManualLoop())

    @property
    def writes(self) -> list[bytes]:
        return cast(RecordingTransport, self.transport).writes

    def end_turn(self) -> None:
        cast(ManualLoop, self._loop).end_turn()


def frames(n: int, start: int = 0) -> list[bytes]:
    return [bytes([i % 256]) for i in range(start, start + n)]


def test_a_lone_frame_written_now_leaves_at_once() -> None:
    writer = Writer()
    writer.write(b"a", now=True)
    assert writer.writes == [b"a"]


def test_a_turn_leaves_in_chunks_that_double_up_to_the_limit() -> None:
    writer = Writer()
    sent = frames(100)
    for frame in sent:
        writer.write(frame)
    # Chunks of 2, 4, 8, 16, then 32 at most; the rest when the turn ends.
    assert [len(w) for w in writer.writes] == [2, 4, 8, 16, 32, 32]
    writer.end_turn()
    assert [len(w) for w in writer.writes] == [2, 4, 8, 16, 32, 32, 6]
    assert b"".join(writer.writes) == b"".join(sent)  # nothing lost, nothing reordered


def test_each_turn_starts_again_with_a_small_chunk() -> None:
    writer = Writer()
    for frame in frames(7):
        writer.write(frame)
    writer.end_turn()
    assert [len(w) for w in writer.writes] == [2, 4, 1]
    for frame in frames(3, start=7):
        writer.write(frame)
    writer.end_turn()
    assert [len(w) for w in writer.writes] == [2, 4, 1, 2, 1]
    assert b"".join(writer.writes) == b"".join(frames(10))


def test_a_frame_written_now_waits_behind_frames_already_waiting() -> None:
    writer = Writer()
    writer.write(b"a")
    writer.write(b"b", now=True)  # "now" must not overtake "a"
    assert writer.writes == [b"ab"]


def test_nothing_is_written_without_a_transport() -> None:
    writer = Writer()
    recorder = writer.transport
    writer.transport = None
    writer.write(b"a", now=True)
    writer.write(b"b")
    writer.end_turn()
    assert cast(RecordingTransport, recorder).writes == []
