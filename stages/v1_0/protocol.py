"""The wire protocol: length-prefixed frames, as a codec with no I/O inside.

TCP delivers a *stream* of bytes, not messages: one ``send`` may arrive as three ``recv``\\ s, and
three sends may arrive as one. So every message travels as a **frame**: a fixed-size header that
says how long the body is, then the body. The receiver keeps reading until it holds a whole header,
learns the body length from it, and keeps reading until it holds the whole body.

Header layout (16 bytes, big-endian "network order")::

    offset  size  field          meaning
    ------  ----  -------------  ---------------------------------------------------------------
         0     2  magic          0x5250 ("RP"): rejects a peer that speaks another protocol
         2     1  version        PROTOCOL_VERSION; a frame of another version is refused
         3     1  type           what the frame is: 1 = REQUEST, 2 = RESPONSE
         4     1  codec          how the body is encoded; v1.0 knows only 0 = UTF-8 text
         5     1  status         a response's outcome (errors.Status); 0 in requests
         6     2  reserved       0; room for flags in later versions
         8     4  request id     chosen by the client, echoed by the server's response
        12     4  body length    number of body bytes that follow the header
    ------  ----  -------------  ---------------------------------------------------------------
        16     n  body           ``body length`` bytes

Why each field is there:

* **magic** catches the most common mistake (pointing a client at the wrong port) as soon as a
  header's worth of bytes has arrived, before we believe anything else the peer says.
* **version** lets the format change later without guessing.
* **request id** pairs an answer with its question. With one call per connection (v1.0) it is a
  safety check; once many calls share a connection (v2.1) it is what makes that possible.
* **body length** is checked against ``max_frame_size`` from the header alone, before a single
  body byte is read or buffered: a peer that claims a 4 GiB body is refused, not obeyed.

The :class:`FrameCodec` is *sans-IO* (in the manner of h11): you :meth:`~FrameCodec.feed` it
bytes that arrived from anywhere and ask it for frames; it never touches a socket. That keeps it
easy to test (any chunking of a stream must give the same frames), to fuzz, and to teach.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import Final, Literal, NamedTuple

from stages.v1_0.errors import LocalProtocolError, RemoteProtocolError, Status

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameType",
    "Frame",
    "FrameTooLargeError",
    "NEED_DATA",
    "NeedData",
    "FrameCodec",
    "encode_frame",
    "dissect",
]

MAGIC: Final = 0x5250
PROTOCOL_VERSION: Final = 1
#: magic, version, type, codec, status, reserved, request id, body length
HEADER: Final = struct.Struct("!HBBBBHII")
HEADER_SIZE: Final = HEADER.size  # 16
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
_MAX_REQUEST_ID: Final = 2**32 - 1


class FrameType(enum.IntEnum):
    """The frame types of v1.0. Later versions add their own (heartbeats in v2.1)."""

    REQUEST = 1
    RESPONSE = 2


class Frame(NamedTuple):
    """One decoded frame.

    ``type``, ``codec`` and ``status`` are kept as plain ints: the frame layer only moves them;
    what they mean is decided one layer up, so a later version can add values without touching
    this codec.

    A frame is immutable: a named tuple, so it also unpacks like one
    (``ftype, request_id, body, codec, status = frame``).
    """

    type: int
    request_id: int
    body: bytes = b""
    codec: int = 0
    status: int = Status.OK


class NeedData(enum.Enum):
    """Sentinel type: the codec needs more bytes before it can return a frame."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class FrameTooLargeError(RemoteProtocolError):
    """A frame header announced a body larger than this side accepts.

    The header was readable, so the request id is known and the server can answer this one
    request with a clear error before it closes the connection.
    """

    def __init__(self, size: int, limit: int, request_id: int) -> None:
        super().__init__(
            f"frame body of {size} bytes exceeds the limit of {limit} bytes", Status.TOO_LARGE
        )
        self.size = size
        self.limit = limit
        self.request_id = request_id


def encode_frame(
    frame: Frame,
    *,
    version: int = PROTOCOL_VERSION,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """Encode one frame: header, then body (see :meth:`FrameCodec.encode`).

    Raises:
        LocalProtocolError: the body is larger than ``max_frame_size``, or a header field is
            out of range. These are our own bugs, caught before anything is sent.
    """
    return FrameCodec(max_frame_size=max_frame_size, version=version).encode(frame)


class FrameCodec:
    """Turns a byte stream into frames and frames into bytes; no I/O.

    Typical use by a transport::

        codec = FrameCodec()
        codec.feed(data_from_socket)
        while (frame := codec.next_frame()) is not NEED_DATA:
            handle(frame)

    Args:
        max_frame_size: largest body accepted, in bytes (checked from the header).
        version: the protocol version this side speaks; frames of another version are refused.
    """

    # Bytes received and not yet returned are _buffer[_pos:]. Deleting each frame from the
    # front of the buffer as it is returned would move the rest of the buffer every time: with
    # a thousand small frames in one read, a thousand moves of up to the whole read (quadratic).
    # So the frames are read from a moving position, and the consumed front is deleted in one
    # go once it passes this size, or when the buffer empties.
    _COMPACT_AT: Final = 64 * 1024

    def __init__(
        self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, version: int = PROTOCOL_VERSION
    ) -> None:
        if max_frame_size < 0:
            raise ValueError(f"max_frame_size must be >= 0, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self.version = version
        self._buffer = bytearray()
        self._pos = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer.

        Raises:
            RuntimeError: bytes fed after :meth:`feed_eof`.
        """
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        self._buffer += data

    def feed_eof(self) -> None:
        """Tell the codec the peer closed its side; later :meth:`next_frame` calls report any
        half-received frame as an error instead of waiting for bytes that will never come."""
        self._eof = True

    def next_frame(self) -> Frame | Literal[NeedData.NEED_DATA]:
        """Return the next complete frame, or :data:`NEED_DATA` if more bytes are needed.

        Raises:
            FrameTooLargeError: a header announced a body above ``max_frame_size``.
            RemoteProtocolError: wrong magic or version, or the stream ended inside a frame.
                Once raised, the stream cannot be trusted any more: every later call raises the
                same error, and the connection should be closed.
        """
        if self._error is not None:
            raise self._error
        buf = self._buffer
        pos = self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            return self._need_data(available)
        # The header alone decides whether we go on: it is checked before the body is awaited.
        magic, version, ftype, codec, status, _reserved, request_id, size = HEADER.unpack_from(
            buf, pos
        )
        if magic != MAGIC:
            return self._fail(
                RemoteProtocolError(f"bad magic number 0x{magic:04x} (expected 0x{MAGIC:04x})")
            )
        if version != self.version:
            return self._fail(
                RemoteProtocolError(
                    f"unsupported protocol version {version} (this side speaks {self.version})"
                )
            )
        if size > self.max_frame_size:
            return self._fail(FrameTooLargeError(size, self.max_frame_size, request_id))
        start = pos + HEADER_SIZE
        end = start + size
        if len(buf) < end:
            return self._need_data(available)
        body = bytes(buf[start:end])
        if end == len(buf) or end >= self._COMPACT_AT:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return Frame(ftype, request_id, body, codec, status)

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame buffered so far (see :meth:`next_frame` for errors)."""
        while (frame := self.next_frame()) is not NEED_DATA:
            yield frame

    def encode(self, frame: Frame) -> bytes:
        """Encode one frame in this codec's version: header, then body.

        Raises:
            LocalProtocolError: the body is larger than ``max_frame_size``, or a header field
                is out of range. These are our own bugs, caught before anything is sent.
        """
        ftype, request_id, body, codec, status = frame
        size = len(body)
        if size > self.max_frame_size:
            raise LocalProtocolError(
                f"frame body of {size} bytes exceeds the limit of {self.max_frame_size} bytes",
                Status.TOO_LARGE,
            )
        try:
            return HEADER.pack(MAGIC, self.version, ftype, codec, status, 0, request_id,
                               size) + body
        except struct.error as exc:
            raise LocalProtocolError(f"cannot encode frame header: {exc}") from exc

    def _need_data(self, available: int) -> Literal[NeedData.NEED_DATA]:
        if self._eof and available:
            return self._fail(
                RemoteProtocolError(f"connection closed in the middle of a frame ({available} "
                                    "bytes of it received)")
            )
        return NEED_DATA

    def _fail(self, error: RemoteProtocolError) -> Literal[NeedData.NEED_DATA]:
        self._error = error
        raise error


def dissect(
    data: bytes, frame_types: type[enum.IntEnum] = FrameType
) -> list[tuple[int, int, str, str, str]]:
    """Explain the header of an encoded frame, field by field, for a wire inspector.

    Args:
        data: the encoded frame.
        frame_types: the enum that names the type byte (a later version passes its own).

    Returns:
        Rows ``(offset, size, field, hex bytes, decoded value)`` for each header field, then one
        row for the body (its first 32 bytes in hex, decoded as text where it is text).

    Raises:
        ValueError: fewer than :data:`HEADER_SIZE` bytes.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"need at least {HEADER_SIZE} bytes, got {len(data)}")
    values = HEADER.unpack_from(data, 0)
    layout = [
        ("magic", 2, f"0x{values[0]:04x}" + (" (RP)" if values[0] == MAGIC else " (wrong!)")),
        ("version", 1, str(values[1])),
        ("type", 1, _enum_name(frame_types, values[2])),
        ("codec", 1, str(values[3])),
        ("status", 1, _enum_name(Status, values[4])),
        ("reserved", 2, str(values[5])),
        ("request id", 4, str(values[6])),
        ("body length", 4, str(values[7])),
    ]
    rows = []
    offset = 0
    for name, size, value in layout:
        rows.append((offset, size, name, data[offset : offset + size].hex(" "), value))
        offset += size
    body = data[HEADER_SIZE : HEADER_SIZE + values[7]]
    try:
        text = repr(body.decode("utf-8"))
    except UnicodeDecodeError:
        text = f"{len(body)} bytes"
    rows.append((HEADER_SIZE, len(body), "body", body[:32].hex(" ") + (" …" if len(body) > 32 else ""), text))
    return rows


def _enum_name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return f"{value} ({enum_type(value).name})"
    except ValueError:
        return str(value)
