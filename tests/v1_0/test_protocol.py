"""The v1.0 frame codec, with no sockets: bytes in, frames out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v1_0.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, Status
from stages.v1_0.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    PROTOCOL_VERSION,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    FrameType,
    dissect,
    encode_frame,
)

frames_st = st.builds(
    Frame,
    type=st.integers(0, 255),
    request_id=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=300),
    codec=st.integers(0, 255),
    status=st.integers(0, 255),
)


def decode_all(codec: FrameCodec, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        codec.feed(chunk)
        out.extend(codec.frames())
    return out


def test_header_is_sixteen_bytes_and_starts_with_magic() -> None:
    data = encode_frame(Frame(FrameType.REQUEST, 7, b"abc"))
    assert HEADER_SIZE == 16
    assert data[:2] == b"RP" and MAGIC == 0x5250
    assert data[2] == PROTOCOL_VERSION
    assert struct.unpack("!I", data[8:12]) == (7,)
    assert struct.unpack("!I", data[12:16]) == (3,)
    assert data[16:] == b"abc"


@given(st.lists(frames_st, max_size=8))
def test_round_trip(frames: list[Frame]) -> None:
    codec = FrameCodec()
    assert decode_all(codec, [b"".join(codec.encode(f) for f in frames)]) == frames
    assert codec.buffered == 0


@settings(max_examples=200)
@given(st.lists(frames_st, min_size=1, max_size=6), st.data())
def test_any_chunking_gives_the_same_frames(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    assert decode_all(FrameCodec(), chunks) == frames


def test_every_split_point_of_one_frame() -> None:
    frame = Frame(FrameType.RESPONSE, 99, b"x" * 40, status=Status.INTERNAL)
    stream = encode_frame(frame)
    for cut in range(len(stream) + 1):
        codec = FrameCodec()
        codec.feed(stream[:cut])
        if cut < len(stream):
            assert codec.next_frame() is NEED_DATA
        codec.feed(stream[cut:])
        assert codec.next_frame() == frame


def test_truncated_input_waits_for_more() -> None:
    codec = FrameCodec()
    codec.feed(encode_frame(Frame(FrameType.REQUEST, 1, b"hello"))[:-1])
    assert codec.next_frame() is NEED_DATA
    assert codec.buffered == HEADER_SIZE + 4


def test_eof_inside_a_frame_is_an_error_and_clean_eof_is_not() -> None:
    codec = FrameCodec()
    codec.feed(encode_frame(Frame(FrameType.REQUEST, 1, b"hello"))[:10])
    codec.feed_eof()
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        codec.next_frame()
    clean = FrameCodec()
    clean.feed(encode_frame(Frame(FrameType.REQUEST, 1)))
    clean.feed_eof()
    assert clean.next_frame() == Frame(FrameType.REQUEST, 1)
    assert clean.next_frame() is NEED_DATA


def test_bad_magic_raises_and_keeps_raising() -> None:
    codec = FrameCodec()
    codec.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="bad magic number 0x4745"):
        codec.next_frame()
    with pytest.raises(RemoteProtocolError):
        codec.next_frame()  # a broken stream stays broken


def test_wrong_version_is_refused() -> None:
    codec = FrameCodec()
    codec.feed(HEADER.pack(MAGIC, 99, 1, 0, 0, 0, 1, 0))
    with pytest.raises(RemoteProtocolError, match="unsupported protocol version 99"):
        codec.next_frame()


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    codec = FrameCodec(max_frame_size=1024)
    codec.feed(HEADER.pack(MAGIC, PROTOCOL_VERSION, 1, 0, 0, 0, 42, 4 * 2**30 - 1))
    with pytest.raises(FrameTooLargeError) as info:
        codec.next_frame()
    err = info.value
    assert (err.size, err.limit, err.request_id, err.status) == (4 * 2**30 - 1, 1024, 42, Status.TOO_LARGE)
    assert "4294967295" in str(err) and "1024" in str(err)
    assert codec.buffered == HEADER_SIZE  # nothing was allocated for the body


def test_frame_exactly_at_the_limit_passes() -> None:
    codec = FrameCodec(max_frame_size=8)
    codec.feed(encode_frame(Frame(1, 1, b"12345678")))
    assert codec.next_frame().body == b"12345678"


def test_encoding_a_frame_too_large_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds the limit"):
        FrameCodec(max_frame_size=4).encode(Frame(1, 1, b"12345"))
    with pytest.raises(LocalProtocolError, match="header"):
        encode_frame(Frame(1, 2**32, b""))


def test_feed_after_eof_is_a_usage_error() -> None:
    codec = FrameCodec()
    codec.feed_eof()
    with pytest.raises(RuntimeError):
        codec.feed(b"x")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(junk: bytes) -> None:
    codec = FrameCodec(max_frame_size=64)
    codec.feed(junk)
    codec.feed_eof()
    try:
        list(codec.frames())
    except ProtocolError:
        pass


def test_many_small_frames_in_one_read_decode_linearly() -> None:
    frames = [Frame(FrameType.REQUEST, i, b"x" * 10) for i in range(20000)]
    codec = FrameCodec()
    codec.feed(b"".join(map(encode_frame, frames)))
    assert list(codec.frames()) == frames


def test_dissect_names_every_field() -> None:
    rows = dissect(encode_frame(Frame(FrameType.REQUEST, 5, b"userService:getUser?id=1")))
    assert [r[2] for r in rows] == ["magic", "version", "type", "codec", "status", "reserved",
                                   "request id", "body length", "body"]
    assert rows[0][3] == "52 50" and rows[2][4] == "1 (REQUEST)"
    assert rows[-1][4] == "'userService:getUser?id=1'"
