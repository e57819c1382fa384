"""The wire protocol of v2.1: v1.0's frames, unchanged, plus three frame types.

The header, the codec and the size limit are v1.0's (``stages.v1_0.protocol``). Long-lived
connections need the two sides to talk about the connection itself, not only about calls, so
v2.1 adds control frames. They carry request id 0 and are never matched to a call::

    type  name      sent by   meaning
    ----  --------  --------  ---------------------------------------------------------------
       1  REQUEST   client    a call (v1.0)
       2  RESPONSE  server    its answer, matched by request id (v1.0)
       3  PING      client    "are you there?", sent when the connection has been silent
       4  PONG      server    "yes": any bytes read prove the peer alive, a pong is just the
                              cheapest such bytes
       5  GOAWAY    server    "send me no new calls": the body says why (``GoAway``); calls
                              already sent are still answered, then the server closes

The version stays 1: a v1.0 peer reading a PING answers "expected a REQUEST frame", a clear
error, and nothing about the existing frame types changed. The header's codec byte gains one
value: 3, pickle whose answers may be records (``stages.v2_1.fastpath``), which v2.1 clients ask
in and v2.1 servers offer beside v2.0's 1 (protobuf) and 2 (pickle).
"""

from __future__ import annotations

import enum

from stages.v1_0 import protocol as v1_0
from stages.v1_0.protocol import (  # unchanged since v1.0
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    NEED_DATA,
    PROTOCOL_VERSION,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    encode_frame,
)

__all__ = [
    "FrameType", "GoAway", "Frame", "FrameCodec", "FrameTooLargeError", "NEED_DATA",
    "PROTOCOL_VERSION", "HEADER_SIZE", "DEFAULT_MAX_FRAME_SIZE", "encode_frame", "dissect",
    "PING_FRAME", "PONG_FRAME", "goaway_frame", "goaway_reason",
]


class FrameType(enum.IntEnum):
    """v1.0's frame types and the control frames of v2.1."""

    REQUEST = 1
    RESPONSE = 2
    PING = 3
    PONG = 4
    GOAWAY = 5


class GoAway(enum.Enum):
    """Why a server sent GOAWAY (the frame's body, ASCII)."""

    #: The server is shutting down gracefully.
    SHUTDOWN = "shutdown"
    #: The client pinged more often than the server allows (gRPC's ENHANCE_YOUR_CALM).
    TOO_MANY_PINGS = "too_many_pings"
    #: The connection was silent longer than the server's idle timeout.
    IDLE = "idle"


def dissect(data: bytes) -> list[tuple[int, int, str, str, str]]:
    """v1.0's wire inspector, naming v2.1's frame types."""
    return v1_0.dissect(data, FrameType)


# Control frames never change, so they are encoded once.
PING_FRAME = encode_frame(Frame(FrameType.PING, 0))
PONG_FRAME = encode_frame(Frame(FrameType.PONG, 0))


def goaway_frame(reason: GoAway) -> bytes:
    """The encoded GOAWAY frame for ``reason``."""
    return encode_frame(Frame(FrameType.GOAWAY, 0, reason.value.encode("ascii")))


def goaway_reason(frame: Frame) -> GoAway:
    """Why a GOAWAY frame says the server goes away; a reason this side cannot read counts as a
    shutdown (the connection goes away either way)."""
    try:
        return GoAway(frame.body.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return GoAway.SHUTDOWN
