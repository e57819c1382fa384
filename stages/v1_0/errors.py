"""One exception tree for every version of the walkthrough.

A caller who wants to catch "anything the RPC layer did" catches :class:`RpcError`. Below it the
tree says *where* things went wrong, because that decides what a caller can do about it::

    RpcError
    ├── ProtocolError            the bytes on the wire broke the rules
    │   ├── LocalProtocolError       ... bytes *we* were about to send (a bug on our side)
    │   └── RemoteProtocolError      ... bytes the peer sent (garbage, wrong magic, too large)
    ├── TransportError           the connection itself failed
    │   ├── ConnectionClosedError    it closed (``closed_by_peer`` tells who closed it)
    │   └── RpcTimeoutError          no answer within the deadline
    ├── RemoteError              the server understood the call and answered with an error
    │                            (``status``, ``message``, ``details``)
    └── ConfigError              a configuration value is invalid (also a ValueError)

Later versions add branches (serialization errors in v2.0, registry and circuit-breaker errors in
v3.x) by subclassing these classes; they never start a second tree.

The :class:`Status` codes travel in the frame header of an error response, so a client can rebuild
the right :class:`RemoteError` from the code alone. Codes are part of the wire format: never renumber
them.
"""

from __future__ import annotations

import enum
import reprlib

__all__ = [
    "Status",
    "RpcError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TransportError",
    "ConnectionClosedError",
    "RpcTimeoutError",
    "RemoteError",
    "ConfigError",
    "MAX_MESSAGE",
    "clip",
    "clip_repr",
]

#: Longest piece of peer-supplied text (a name, a value's repr) an error message may quote.
MAX_MESSAGE = 200


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, marked with how much was left out.

    Every error message that quotes something a peer sent goes through this: a request with a
    10 MB method name must not become a 10 MB error message (nor a 10 MB log line).
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, made safe for any value a peer can send."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int with 100,000 digits takes quadratic time (and Python refuses past
        # 4,300 digits): say how large it is instead.
        if x.bit_length() > 128:
            return f"<int of {x.bit_length()} bits>"
        return repr(x)

    def repr_bytes(self, x: bytes, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{x[:self.maxstring]!r}... ({len(x)} bytes)"

    def repr_instance(self, x: object, level: int) -> str:
        # Anything else (a data class, say) would print all of itself: name its type only.
        if type(x) in (float, complex, bool, type(None)):
            return repr(x)
        return f"<{type(x).__qualname__}>"


_short = _ShortRepr()


def clip_repr(value: object) -> str:
    """A ``repr`` of a peer-supplied value that stays short however large the value is.

    A plain ``repr`` walks the whole value: a small graph of shared references (a list holding
    the same list twice, 30 levels deep) would print as 2**30 items. This one looks at a few
    items of a few levels only (:mod:`reprlib`), so its cost and length are bounded.
    """
    return clip(_short.repr(value))


class Status(enum.IntEnum):
    """Outcome of a call, sent in the ``status`` byte of a response frame."""

    OK = 0
    #: The request could not be parsed (a malformed request line, bad arguments).
    BAD_REQUEST = 1
    #: No such service or method on this server.
    NOT_FOUND = 2
    #: The service raised, or the server failed while running the call.
    INTERNAL = 3
    #: The frame broke the protocol (wrong magic, unknown version, unexpected type).
    PROTOCOL_ERROR = 4
    #: The frame is larger than the receiver accepts.
    TOO_LARGE = 5
    #: The server is overloaded or going away and did not run the call.
    UNAVAILABLE = 6
    #: The caller did not show the credentials the server asks for (used from v3.3 on).
    UNAUTHENTICATED = 7


class RpcError(Exception):
    """Root of every error raised by the RPC layer."""


class ProtocolError(RpcError):
    """Bytes on the wire broke the protocol.

    Attributes:
        status: the :class:`Status` a server answers with when it can still answer.
    """

    def __init__(self, message: str, status: Status = Status.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (for example a frame too large)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""


class TransportError(RpcError):
    """The connection failed: it could not be opened, it closed, or it went silent."""


class ConnectionClosedError(TransportError):
    """The connection closed before the call was answered.

    Attributes:
        closed_by_peer: True when the other side closed or reset it; False when we closed it
            ourselves (for example on shutdown). The two need different handling: a peer that
            went away may be retried elsewhere, our own close is final.
    """

    def __init__(self, message: str, *, closed_by_peer: bool = True) -> None:
        super().__init__(message)
        self.closed_by_peer = closed_by_peer


class RpcTimeoutError(TransportError):
    """No answer arrived within the deadline. The call may or may not have run on the server."""


class RemoteError(RpcError):
    """The server answered the call with an error.

    Attributes:
        status: why the call failed (:class:`Status`).
        message: the server's one-line explanation.
        details: optional longer text, such as the remote traceback.
    """

    def __init__(self, status: Status, message: str, details: str | None = None) -> None:
        super().__init__(f"[{status.name}] {message}")
        self.status = status
        self.message = message
        self.details = details


class ConfigError(RpcError, ValueError):
    """A configuration value is invalid. Raised when the configuration is built, never later."""
