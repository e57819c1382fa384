"""v1.0: a client sends a request over a raw asyncio socket; the server parses it and answers.

Modules, in the order a reader meets them:

* :mod:`~stages.v1_0.protocol`: frames on the wire (sans-IO codec, header byte table);
* :mod:`~stages.v1_0.messages`: the readable request line inside a frame;
* :mod:`~stages.v1_0.errors`: the exception tree every later version extends;
* :mod:`~stages.v1_0.config`: frozen, validated settings;
* :mod:`~stages.v1_0.server` and :mod:`~stages.v1_0.client`: the asyncio ends of the wire;
* :mod:`~stages.v1_0.service`: the demo user service.
"""

from stages.v1_0.client import Client
from stages.v1_0.config import ClientConfig, ServerConfig
from stages.v1_0.errors import (
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
from stages.v1_0.messages import (
    Request,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
)
from stages.v1_0.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    FrameType,
    dissect,
    encode_frame,
)
from stages.v1_0.server import Server
from stages.v1_0.service import UserService

STAGE = "1.0"

__all__ = [
    "STAGE", "PROTOCOL_VERSION",
    "Client", "ClientConfig", "Server", "ServerConfig", "UserService",
    "Frame", "FrameCodec", "FrameType", "FrameTooLargeError", "NEED_DATA", "encode_frame", "dissect",
    "Request", "encode_request", "decode_request", "encode_result", "decode_result",
    "RpcError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "TransportError",
    "ConnectionClosedError", "RpcTimeoutError", "RemoteError", "ConfigError", "Status",
]
