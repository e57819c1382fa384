"""Deadlines that travel, and cancelling work nobody waits for (v3.2).

Until v3.1 a call's deadline lived in the client only. When it passed, the client gave up, but
the provider went on: it started calls whose caller had already left, and finished them for
nobody, while the callers that were still waiting queued behind them. Two new frame types
carry the caller's time to the provider, as gRPC carries ``grpc-timeout`` and sends
``RST_STREAM``::

    type  name           sent by  body
    ----  -------------  -------  -----------------------------------------------------------
       6  TIMED_REQUEST  client   4 bytes: milliseconds the caller still waits (big-endian),
                                  then the body of a REQUEST, in the frame's codec
       7  CANCEL         client   empty: the caller of this request id no longer waits

The provider:

* does not start a call whose time is up when it arrives (it answers UNAVAILABLE, not run);
* lets the implementation read the time left, :func:`remaining`, while it runs (in an inline
  or a coroutine method; a method in the thread pool does not see it);
* cancels a call still running when its time is up, and one whose caller sent CANCEL: a
  coroutine method stops at its next ``await``, a thread-pool call that has not started never
  starts (one that has started cannot be stopped from outside, and runs to its end).

The header and the other frame types are v2.1's, unchanged. A v2.1 server would refuse the new
types as a protocol error, so a consumer sends them only to providers whose registry entry lists
the features ``deadline`` and ``cancel``, as every v3.2 provider's does; to others it sends plain
REQUESTs, and nothing changes. The milliseconds are counted from when the frame is written: the
time it spends on the wire is the caller's, not the provider's (on one machine, microseconds).
"""

from __future__ import annotations

import asyncio
import contextvars
import struct
from typing import Final

from stages.v1_0.errors import RemoteProtocolError
from stages.v1_0.protocol import Frame, encode_frame
from stages.v2_1.protocol import FrameType

__all__ = ["TIMED_REQUEST", "CANCEL", "FEATURES", "timed", "untimed", "cancel_frame",
           "remaining", "serving_until", "reset"]

TIMED_REQUEST: Final = 6
CANCEL: Final = 7
#: What a v3.2 provider lists in its registry entry: it understands both frame types.
FEATURES: Final = ("deadline", "cancel")

_MILLISECONDS = struct.Struct("!I")
_MAX_MS: Final = 2**32 - 1

#: The loop time at which the call being served is due (None: no deadline known).
_due: contextvars.ContextVar[float | None] = contextvars.ContextVar("rpc_deadline", default=None)


def timed(request: Frame, seconds: float) -> Frame:
    """``request`` as a TIMED_REQUEST for a caller who waits ``seconds`` more."""
    ms = min(_MAX_MS, max(0, round(seconds * 1000)))
    return Frame(TIMED_REQUEST, request.request_id, _MILLISECONDS.pack(ms) + request.body,
                 request.codec)


def untimed(frame: Frame) -> tuple[Frame, float]:
    """The REQUEST inside a TIMED_REQUEST, and the seconds its caller still waits.

    Raises:
        RemoteProtocolError: the body is too short to hold the milliseconds.
    """
    if len(frame.body) < _MILLISECONDS.size:
        raise RemoteProtocolError(f"a TIMED_REQUEST body needs {_MILLISECONDS.size} bytes of "
                                  f"milliseconds, got {len(frame.body)}")
    (ms,) = _MILLISECONDS.unpack_from(frame.body)
    return (Frame(FrameType.REQUEST, frame.request_id, frame.body[_MILLISECONDS.size:],
                  frame.codec), ms / 1000)


def cancel_frame(request_id: int) -> bytes:
    """The encoded CANCEL frame of one request id."""
    return encode_frame(Frame(CANCEL, request_id))


def serving_until(due: float) -> contextvars.Token[float | None]:
    """Mark the call about to be served as due at loop time ``due`` (the provider's side; reset
    with the token once the call has been started: a task keeps a copy of the context)."""
    return _due.set(due)


def reset(token: contextvars.Token[float | None]) -> None:
    """Undo :func:`serving_until`."""
    _due.reset(token)


def remaining() -> float | None:
    """Seconds the caller of the call being served still waits, or None if it sent no deadline
    (or this is not an inline or coroutine method served by a v3.2 provider)."""
    due = _due.get()
    if due is None:
        return None
    return max(0.0, due - asyncio.get_running_loop().time())
