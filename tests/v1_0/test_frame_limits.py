"""The frame size limit, at its edge: a body of exactly ``max_frame_size`` bytes is a frame, one
byte more is refused, on the way in (from the header alone) and on the way out."""

from __future__ import annotations

import pytest

from stages.v1_0.errors import LocalProtocolError, Status
from stages.v1_0.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    PROTOCOL_VERSION,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    FrameType,
    encode_frame,
)

LIMITS = [0, 1, 7, 1024, DEFAULT_MAX_FRAME_SIZE]


def header(size: int, request_id: int = 42) -> bytes:
    """A REQUEST header announcing a body of ``size`` bytes, without the body."""
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, FrameType.REQUEST, 0, 0, 0, request_id, size)


def codec_for(limit: int) -> FrameCodec:
    # The default limit is the one every stage runs with: test it as the default, not as an
    # argument that happens to have the same value.
    return FrameCodec() if limit == DEFAULT_MAX_FRAME_SIZE else FrameCodec(max_frame_size=limit)


@pytest.mark.parametrize("limit", LIMITS)
def test_a_header_announcing_exactly_the_limit_waits_for_its_body(limit: int) -> None:
    codec = codec_for(limit)
    codec.feed(header(limit))
    if limit == 0:
        assert codec.next_frame() == Frame(FrameType.REQUEST, 42, b"")
    else:
        assert codec.next_frame() is NEED_DATA  # accepted: it waits for the body
        assert codec.buffered == HEADER_SIZE


@pytest.mark.parametrize("limit", LIMITS)
def test_a_header_announcing_one_byte_more_is_refused_before_any_body_byte(limit: int) -> None:
    codec = codec_for(limit)
    codec.feed(header(limit + 1, request_id=7))
    with pytest.raises(FrameTooLargeError) as info:
        codec.next_frame()
    err = info.value
    assert (err.size, err.limit, err.request_id, err.status) == (limit + 1, limit, 7, Status.TOO_LARGE)
    assert f"{limit + 1} bytes" in str(err) and f"limit of {limit} bytes" in str(err)
    with pytest.raises(FrameTooLargeError):
        codec.next_frame()  # and the stream stays refused


@pytest.mark.parametrize("limit", [0, 1, 7, 1024])
def test_a_whole_frame_at_the_limit_decodes_and_one_byte_more_does_not(limit: int) -> None:
    at_limit = Frame(FrameType.RESPONSE, 3, b"x" * limit, codec=2, status=Status.OK)
    codec = FrameCodec(max_frame_size=limit)
    codec.feed(encode_frame(at_limit, max_frame_size=limit))
    assert codec.next_frame() == at_limit
    assert codec.buffered == 0

    over = FrameCodec(max_frame_size=limit)
    over.feed(encode_frame(Frame(FrameType.RESPONSE, 3, b"x" * (limit + 1))))
    with pytest.raises(FrameTooLargeError):
        over.next_frame()


@pytest.mark.parametrize("limit", [0, 1, 7, 1024])
def test_encoding_at_the_limit_works_and_one_byte_more_is_a_local_error(limit: int) -> None:
    codec = FrameCodec(max_frame_size=limit)
    data = codec.encode(Frame(FrameType.REQUEST, 1, b"y" * limit))
    assert len(data) == HEADER_SIZE + limit
    assert encode_frame(Frame(FrameType.REQUEST, 1, b"y" * limit), max_frame_size=limit) == data

    for encode in (codec.encode, lambda f: encode_frame(f, max_frame_size=limit)):
        with pytest.raises(LocalProtocolError) as info:
            encode(Frame(FrameType.REQUEST, 1, b"y" * (limit + 1)))
        assert info.value.status == Status.TOO_LARGE
        assert f"{limit + 1} bytes exceeds the limit of {limit} bytes" in str(info.value)


def test_encoding_at_the_default_limit() -> None:
    body = bytes(DEFAULT_MAX_FRAME_SIZE)
    assert len(encode_frame(Frame(FrameType.RESPONSE, 1, body))) == HEADER_SIZE + len(body)
    with pytest.raises(LocalProtocolError, match="exceeds the limit"):
        encode_frame(Frame(FrameType.RESPONSE, 1, body + b"!"))


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_frame_size must be >= 0"):
        FrameCodec(max_frame_size=-1)
