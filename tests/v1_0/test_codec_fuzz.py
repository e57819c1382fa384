"""Fuzzing the frame codec with properties, not only "nothing but ProtocolError escapes".

For any bytes at all, the codec either returns frames that re-encode to exactly the bytes they
came from, or raises a ProtocolError that carries a status a server can answer with, names the
problem, and stays raised. Cutting the same bytes into any chunks changes nothing of that.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v1_0.errors import ProtocolError, RemoteProtocolError, Status
from stages.v1_0.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    NEED_DATA,
    PROTOCOL_VERSION,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    encode_frame,
)

LIMIT = 64

frames_st = st.builds(
    Frame,
    type=st.integers(0, 255),
    request_id=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=LIMIT),
    codec=st.integers(0, 255),
    status=st.integers(0, 255),
)

# Junk that is sometimes almost a frame: a valid-looking header with random fields, so the
# fuzzer reaches the size check and the body, not only the magic number.
header_st = st.builds(
    HEADER.pack,
    st.sampled_from([MAGIC, MAGIC, MAGIC, 0x5251, 0]),
    st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 2]),
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.one_of(st.integers(0, LIMIT + 2), st.integers(0, 2**32 - 1)),
)
junk_st = st.lists(st.one_of(st.binary(max_size=40), header_st, frames_st.map(encode_frame)),
                   max_size=5).map(b"".join)


def decode(chunks: list[bytes], *, eof: bool = True) -> tuple[list[Frame], ProtocolError | None]:
    """Feed ``chunks`` one by one, collecting frames, until the end or the first error."""
    codec = FrameCodec(max_frame_size=LIMIT)
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            codec.feed(chunk)
            frames.extend(codec.frames())
        if eof:
            codec.feed_eof()
            frames.extend(codec.frames())
    except ProtocolError as exc:
        # A broken stream stays broken: the same error again, whatever comes next.
        with pytest.raises(type(exc)) as again:
            codec.next_frame()
        assert again.value is exc
        return frames, exc
    assert codec.next_frame() is NEED_DATA
    return frames, None


def check_error(error: ProtocolError, rest: bytes) -> None:
    """What a server needs to answer ``error``: a status, a message, the offending request id."""
    assert isinstance(error, RemoteProtocolError)  # the peer's bytes, never our own fault
    assert str(error)
    if isinstance(error, FrameTooLargeError):
        magic, version, _, _, _, _, request_id, size = HEADER.unpack_from(rest)
        assert (magic, version) == (MAGIC, PROTOCOL_VERSION)
        assert (error.status, error.size, error.limit, error.request_id) == (
            Status.TOO_LARGE, size, LIMIT, request_id)
        assert size > LIMIT
    else:
        assert error.status == Status.PROTOCOL_ERROR


def without_reserved(data: bytes) -> bytes:
    """A frame's bytes with the reserved header field zeroed: a reader ignores it."""
    return data[:6] + b"\0\0" + data[8:]


@settings(max_examples=400)
@given(junk_st)
def test_any_bytes_give_their_own_frames_then_at_most_one_clear_error(junk: bytes) -> None:
    frames, error = decode([junk])
    offset = 0
    for frame in frames:  # each frame is exactly the bytes it was read from
        assert len(frame.body) <= LIMIT
        encoded = encode_frame(frame)
        assert without_reserved(junk[offset:offset + len(encoded)]) == encoded
        offset += len(encoded)
    if error is None:
        assert offset == len(junk)  # nothing left over: a clean end
    else:
        check_error(error, junk[offset:])


@settings(max_examples=300)
@given(junk_st, st.data())
def test_any_chunking_of_any_bytes_gives_the_same_frames_and_the_same_error(
        junk: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(junk)), max_size=12)))
    chunks = [junk[a:b] for a, b in zip([0, *cuts], [*cuts, len(junk)])]
    frames, error = decode(chunks)
    whole_frames, whole_error = decode([junk])
    assert frames == whole_frames
    assert type(error) is type(whole_error) and str(error) == str(whole_error)


@settings(max_examples=200)
@given(st.lists(frames_st, max_size=6), st.data())
def test_without_eof_a_cut_stream_waits_and_loses_nothing(frames: list[Frame],
                                                         data: st.DataObject) -> None:
    stream = b"".join(map(encode_frame, frames))
    cut = data.draw(st.integers(0, len(stream)))
    codec = FrameCodec(max_frame_size=LIMIT)
    codec.feed(stream[:cut])
    first = list(codec.frames())
    assert first == frames[:len(first)]
    assert codec.buffered == cut - len(b"".join(map(encode_frame, first)))
    assert codec.buffered < HEADER_SIZE + LIMIT  # never more than one frame is held back
    codec.feed(stream[cut:])
    assert first + list(codec.frames()) == frames
    assert codec.buffered == 0
