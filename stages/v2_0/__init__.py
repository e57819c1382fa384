"""v2.0: APIs are interfaces, called through a dynamic proxy, with pluggable serialization.

What changed since v1.0, module by module:

* :mod:`~stages.v2_0.api` (new): ``@rpc_api`` interfaces and their addresses;
* :mod:`~stages.v2_0.serializers` (new): protobuf and restricted pickle, by serializer id;
  :mod:`~stages.v2_0.protos` (new): the envelope's ``.proto`` file and its generated module;
* :mod:`~stages.v2_0.pickle_scan` and :mod:`~stages.v2_0.limits` (new): what decoding may cost,
  checked before a pickle is loaded and on every decoded value;
* :mod:`~stages.v2_0.errors`: v1.0's tree plus serialization and remote-exception errors;
* :mod:`~stages.v2_0.config`: v1.0's settings plus the serializers;
* :mod:`~stages.v2_0.server`: ``bind`` and a dispatch that replaces v1.0's hand-filled table;
* :mod:`~stages.v2_0.client`: dynamic proxies on top of v1.0's one-connection-per-call client;
* :mod:`~stages.v2_0.user_stub`: the demo stub package; :mod:`~stages.v2_0.provider` and
  :mod:`~stages.v2_0.consumer`: the two sides of the demo.

Unchanged and imported from v1.0: the frame codec (the serializer id travels in the header's
codec byte, which v1.0 already carried) and the connection handling.
"""

from stages.v1_0.protocol import PROTOCOL_VERSION, Frame, FrameCodec, FrameType  # unchanged
from stages.v2_0.api import ApiSpec, MethodSpec, address_of, api_spec, rpc_api
from stages.v2_0.client import Client, rebuild_exception
from stages.v2_0.config import ClientConfig, ServerConfig
from stages.v2_0.errors import (
    ApiDefinitionError,
    ConfigError,
    ConnectionClosedError,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteException,
    RemoteProtocolError,
    RpcError,
    RpcTimeoutError,
    SerializationError,
    Status,
    TransportError,
)
from stages.v2_0.serializers import (
    SERIALIZERS,
    AllowListUnpickler,
    ErrorInfo,
    Invocation,
    Outcome,
    PickleSerializer,
    ProtobufSerializer,
    Serializer,
    TypeRegistry,
    proto_type,
)
from stages.v2_0.server import Binding, Server

STAGE = "2.0"

__all__ = [
    "STAGE", "PROTOCOL_VERSION", "Frame", "FrameCodec", "FrameType",
    "rpc_api", "api_spec", "address_of", "ApiSpec", "MethodSpec",
    "Client", "rebuild_exception", "ClientConfig", "ServerConfig", "Server", "Binding",
    "Serializer", "PickleSerializer", "ProtobufSerializer", "SERIALIZERS", "AllowListUnpickler",
    "TypeRegistry", "proto_type", "Invocation", "Outcome", "ErrorInfo",
    "RpcError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "TransportError",
    "ConnectionClosedError", "RpcTimeoutError", "RemoteError", "RemoteException", "ConfigError",
    "SerializationError", "ApiDefinitionError", "Status",
]
