"""Faults in v1.0's codec and wire inspector that the rest of the suite let through (found by
``make mutate``): every field the inspector shows, the codec's messages, when it lets go of
consumed bytes, and the version ``encode_frame`` writes."""

from __future__ import annotations

import pytest

from stages.v1_0.errors import RemoteProtocolError
from stages.v1_0.protocol import (
    HEADER_SIZE,
    Frame,
    FrameCodec,
    FrameType,
    Status,
    dissect,
    encode_frame,
)


def test_the_inspector_shows_every_field_exactly() -> None:
    data = encode_frame(Frame(FrameType.RESPONSE, 258, b"hi", 2, Status.INTERNAL))
    assert dissect(data) == [
        (0, 2, "magic", "52 50", "0x5250 (RP)"),
        (2, 1, "version", "01", "1"),
        (3, 1, "type", "02", "2 (RESPONSE)"),
        (4, 1, "codec", "02", "2"),
        (5, 1, "status", "03", "3 (INTERNAL)"),
        (6, 2, "reserved", "00 00", "0"),
        (8, 4, "request id", "00 00 01 02", "258"),
        (12, 4, "body length", "00 00 00 02", "2"),
        (16, 2, "body", "68 69", "'hi'"),
    ]


def test_the_inspector_names_what_it_does_not_know_as_numbers_and_binary_as_bytes() -> None:
    body = bytes(range(200, 240))  # 40 bytes, not UTF-8
    data = bytearray(encode_frame(Frame(FrameType.REQUEST, 1, body)))
    data[0], data[3], data[5] = 0x41, 9, 77  # wrong magic, unknown type and status
    rows = dissect(bytes(data))
    assert rows[0][4] == "0x4150 (wrong!)"
    assert rows[2][4] == "9" and rows[4][4] == "77"
    assert rows[-1] == (16, 40, "body", bytes(range(200, 232)).hex(" ") + " …", "40 bytes")
    with pytest.raises(ValueError, match=f"need at least {HEADER_SIZE} bytes, got 15"):
        dissect(bytes(15))
    # A header alone (an empty body) is enough; the ellipsis says only that bytes were left out.
    assert dissect(encode_frame(Frame(FrameType.REQUEST, 0)))[-1] == (16, 0, "body", "", "''")
    for size, cut in ((32, False), (33, True)):
        row = dissect(encode_frame(Frame(FrameType.REQUEST, 1, b"a" * size)))[-1]
        assert row[3].endswith(" …") is cut, size


def test_encode_frame_writes_the_version_it_is_given() -> None:
    assert encode_frame(Frame(FrameType.REQUEST, 1, b""), version=7)[2] == 7


def test_the_codec_says_what_went_wrong_in_words() -> None:
    codec = FrameCodec()
    codec.feed_eof()
    with pytest.raises(RuntimeError, match=r"^feed\(\) after feed_eof\(\)$"):
        codec.feed(b"x")
    cut = FrameCodec()
    cut.feed(encode_frame(Frame(FrameType.REQUEST, 1, b"abcdef"))[:20])
    cut.feed_eof()
    with pytest.raises(RemoteProtocolError, match=r"^connection closed in the middle of a frame "
                                                  r"\(20 bytes of it received\)$"):
        cut.next_frame()


def test_consumed_bytes_are_let_go_when_the_buffer_empties_and_past_the_compaction_size() -> None:
    codec = FrameCodec()
    one = encode_frame(Frame(FrameType.REQUEST, 1, b"x" * 100))
    codec.feed(one * 3)
    assert [f.request_id for f in codec.frames()] == [1, 1, 1]
    assert len(codec._buffer) == 0 and codec._pos == 0  # everything read: nothing kept
    # Frames that end exactly at the compaction size, with more bytes behind them: the front
    # goes at that size, not one frame later.
    size = FrameCodec._COMPACT_AT - HEADER_SIZE
    big = encode_frame(Frame(FrameType.REQUEST, 2, b"y" * size))
    codec.feed(big + one[:10])
    assert codec.next_frame().request_id == 2
    assert len(codec._buffer) == 10 and codec._pos == 0
