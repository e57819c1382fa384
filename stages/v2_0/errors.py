"""The exception tree of v2.0: v1.0's tree, unchanged, plus what interfaces and serializers add::

    RpcError                                   (all of v1.0's branches, re-exported below)
    ├── RemoteError
    │   └── RemoteException       the remote method raised an exception whose type this side
    │                             does not know: ``remote_type``, ``message``, remote traceback
    ├── SerializationError        a value cannot be encoded, or bytes cannot be decoded safely
    └── ApiDefinitionError        an interface or a binding is malformed (also a TypeError)

An exception raised by a remote method whose type the caller knows (a built-in exception, or
one the interface declares) is not wrapped at all: it is raised again as itself.
"""

from __future__ import annotations

from stages.v1_0.errors import (  # unchanged since v1.0
    ConfigError,
    ConnectionClosedError,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    RpcError,
    RpcTimeoutError,
    Status,
    TransportError,
)

__all__ = [
    "Status", "RpcError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError",
    "TransportError", "ConnectionClosedError", "RpcTimeoutError", "RemoteError", "ConfigError",
    "RemoteException", "SerializationError", "ApiDefinitionError",
]


class RemoteException(RemoteError):
    """The remote method raised an exception of a type that cannot be rebuilt here.

    Attributes:
        remote_type: the fully qualified name of the remote exception's class.
        message: ``str()`` of the remote exception.
        details: the remote traceback, as text.
    """

    def __init__(self, remote_type: str, message: str, details: str | None = None) -> None:
        super().__init__(Status.INTERNAL, f"{remote_type}: {message}", details)
        self.remote_type = remote_type


class SerializationError(RpcError):
    """A value could not be encoded, or received bytes could not be decoded (or were refused)."""


class ApiDefinitionError(RpcError, TypeError):
    """An interface, a data type or an implementation does not meet the rules of an RPC API."""
