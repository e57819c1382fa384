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
]


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
