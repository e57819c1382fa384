"""v2.1: long-lived connections with many calls in flight, heartbeats, graceful shutdown.

What changed since v2.0, module by module:

* :mod:`~stages.v2_1.protocol`: v1.0's frames plus PING, PONG and GOAWAY;
* :mod:`~stages.v2_1.heartbeat` (new): when a silent peer is declared dead, as a pure state machine;
* :mod:`~stages.v2_1.config`: heartbeat, ping policy, call limits (per connection and per
  server), the thread pool's size, reconnection backoff;
* :mod:`~stages.v2_1.server`: the connection rewritten (multiplexed; coroutine methods as
  tasks, plain ones in a thread pool unless bound ``inline``; push back, idle close, ping
  strikes, graceful shutdown); dispatch inherited from v2.0;
* :mod:`~stages.v2_1.timer_stub` (new): methods that take time, as a coroutine and as a
  blocking call;
* :mod:`~stages.v2_1.client`: a shared connection with pending calls by request id, deadlines,
  heartbeat and reconnection; v2.0's proxies inherited, only ``exchange`` replaced;
* :mod:`~stages.v2_1.bench`: the comparison with ``grpc.aio`` and a bare asyncio echo, and what
  each way of running a method costs.

Unchanged and imported: the frame codec (v1.0), interfaces, proxies, serializers and errors
(v2.0).
"""

from stages.v2_0.api import ApiSpec, MethodSpec, address_of, api_spec, rpc_api  # unchanged
from stages.v2_0.serializers import PickleSerializer, ProtobufSerializer, proto_type  # unchanged
from stages.v2_1.client import Call, Client, ClientConnection, Endpoint, Interceptor, rpc_timeout
from stages.v2_1.config import ClientConfig, ServerConfig
from stages.v2_1.errors import (
    ApiDefinitionError,
    ConfigError,
    ConnectionClosedError,
    ProtocolError,
    RemoteError,
    RemoteException,
    RpcError,
    RpcTimeoutError,
    SerializationError,
    Status,
    TransportError,
)
from stages.v2_1.heartbeat import Action, Heartbeat, detection_budget
from stages.v2_1.protocol import PROTOCOL_VERSION, Frame, FrameCodec, FrameType, GoAway
from stages.v2_1.server import Run, Server, ServerConnection

STAGE = "2.1"

__all__ = [
    "STAGE", "PROTOCOL_VERSION", "Frame", "FrameCodec", "FrameType", "GoAway",
    "rpc_api", "api_spec", "address_of", "ApiSpec", "MethodSpec", "proto_type",
    "PickleSerializer", "ProtobufSerializer",
    "Client", "ClientConnection", "Endpoint", "Call", "Interceptor", "rpc_timeout",
    "ClientConfig", "ServerConfig", "Server",
    "ServerConnection", "Run", "Heartbeat", "Action", "detection_budget",
    "RpcError", "ProtocolError", "TransportError", "ConnectionClosedError", "RpcTimeoutError",
    "RemoteError", "RemoteException", "ConfigError", "SerializationError", "ApiDefinitionError",
    "Status",
]
