"""The client side of every system: how it makes the call of each workload.

Two kinds, as the systems themselves come:

* an **async client** (:class:`AsyncClient`) makes its calls on the event loop of the measuring
  process; calls in flight are tasks sharing its one connection (v1.0 and v2.0 open one
  connection per call: that is what those stages are);
* a **blocking client** (:class:`BlockingClient`) makes each call in the calling thread; calls
  in flight are threads. Some are shared by all the threads (one connection, as the blocking
  proxies and gRPC's channel are meant to be used), the others are opened once per thread (a
  Pyro5 proxy belongs to one thread; an RPyC connection and a plain socket serve one caller at a
  time); see ``System.shared_client`` in :mod:`benchmarks.systems`.

``caller(workload)`` returns the zero-argument call the harness measures: ``get_user`` for the
small workload and ``echo(payload)`` for the others (the echo systems, which have no methods,
send 100 bytes for the small one).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from benchmarks.workloads import SMALL_ID, Workload

__all__ = [
    "AsyncClient",
    "BlockingClient",
    "EchoAsync",
    "EchoSocket",
    "GrpcAio",
    "GrpcSync",
    "Pyro5Client",
    "RpycClient",
    "Target",
    "V1Async",
    "V2Async",
    "V3Async",
    "V3Blocking",
    "V21Async",
    "V21Blocking",
    "looks_right",
]

TIMEOUT = 60.0
"""Seconds any one call may take before it fails (a hung system must not hang the suite)."""


@dataclass(frozen=True)
class Target:
    """Where a system's server is: its address, and for v3.x, its registry."""

    host: str
    port: int
    zk: str | None = None


class AsyncClient(Protocol):
    def caller(self, workload: Workload) -> Callable[[], Awaitable[object]]: ...

    async def aclose(self) -> None: ...


class BlockingClient(Protocol):
    def caller(self, workload: Workload) -> Callable[[], object]: ...

    def close(self) -> None: ...


def looks_right(workload: Workload, answer: object) -> bool:
    """Whether an answer is the right one for the workload (checked once per cell, before it
    is measured: a system that answers fast and wrong must not win)."""
    if isinstance(answer, dict) and "text" in answer:  # v1.0's answer to echo
        answer = answer["text"].encode("ascii")
    if workload.is_small and answer != workload.payload:
        return str(SMALL_ID) in repr(answer)
    return isinstance(answer, (bytes, bytearray)) and bytes(answer) == workload.payload


# -- async clients ---------------------------------------------------------------------------


class EchoAsync:
    """The bare asyncio echo's client (the ceiling): the payload there and back."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def open(cls, target: Target) -> EchoAsync:
        from stages.harness.peers.echo_peer import EchoPeerClient

        client = EchoPeerClient()
        await client.connect(target.host, target.port)
        return cls(client)

    def caller(self, workload: Workload) -> Callable[[], Awaitable[object]]:
        call, payload = self._client.call, workload.payload
        return lambda: call(payload)

    async def aclose(self) -> None:
        await self._client.aclose()


class V1Async:
    """v1.0: a connection per call, a request line with string parameters."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def open(cls, target: Target) -> V1Async:
        from stages.v1_0 import Client, ClientConfig

        return cls(Client(target.host, target.port, ClientConfig(timeout=TIMEOUT)))

    def caller(self, workload: Workload) -> Callable[[], Awaitable[object]]:
        from stages.v1_0.service import SERVICE_NAME

        call = self._client.call
        if workload.is_small:
            return lambda: call(SERVICE_NAME, "getUser", id=SMALL_ID)
        text = workload.text
        return lambda: call(SERVICE_NAME, "echo", text=text)

    async def aclose(self) -> None:
        pass  # nothing stays open between calls


class _ProxyClient:
    """A stage client called through async proxies of the demo interfaces (v2.0 and later)."""

    def __init__(self, client: Any) -> None:
        from stages.v2_0.user_stub import InventoryApi, UserApi

        self._client = client
        self._users = client.async_proxy(UserApi)
        self._inventory = client.async_proxy(InventoryApi)

    def caller(self, workload: Workload) -> Callable[[], Awaitable[object]]:
        if workload.is_small:
            get_user = self._users.get_user
            return lambda: get_user(SMALL_ID)
        echo, payload = self._inventory.echo, workload.payload
        return lambda: echo(payload)

    async def aclose(self) -> None:
        if hasattr(self._client, "aclose"):
            await self._client.aclose()


class V2Async(_ProxyClient):
    """v2.0: async proxies, still a connection per call."""

    @classmethod
    async def open(cls, target: Target) -> V2Async:
        from stages.v2_0 import Client, ClientConfig

        return cls(Client(target.host, target.port, ClientConfig(timeout=TIMEOUT)))


class V21Async(_ProxyClient):
    """v2.1: async proxies on one long-lived, multiplexed connection."""

    @classmethod
    async def open(cls, target: Target) -> V21Async:
        from stages.v2_1 import Client, ClientConfig

        return cls(Client(target.host, target.port, ClientConfig(timeout=TIMEOUT)))


def _v3_client(target: Target) -> Any:
    """A v3.x consumer with every governance feature on: providers discovered in ZooKeeper,
    the default balancer (p2c) and outlier detection, circuit breakers, client metrics."""
    from stages.v3_x import BreakerConfig, Client, ClientConfig, ZooKeeperRegistry
    from stages.v3_x.metrics import ClientMetrics

    if target.zk is None:
        raise ValueError("a v3.x client needs the ZooKeeper connect string")
    client = Client(ZooKeeperRegistry(target.zk),
                    ClientConfig(timeout=TIMEOUT, breaker=BreakerConfig()))
    ClientMetrics().attach(client)
    return client


class V3Async(_ProxyClient):
    """v3.x: async proxies, through the registry, the balancer, breakers and metrics."""

    @classmethod
    async def open(cls, target: Target) -> V3Async:
        return cls(_v3_client(target))


class GrpcAio:
    """gRPC's asyncio client (one channel, one HTTP/2 connection)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def open(cls, target: Target) -> GrpcAio:
        from stages.harness.peers.grpc_peer import GrpcPeerClient

        client = GrpcPeerClient()
        await client.connect(target.host, target.port)
        return cls(client)

    def caller(self, workload: Workload) -> Callable[[], Awaitable[object]]:
        if workload.is_small:
            get_user = self._client.get_user
            return lambda: get_user(SMALL_ID)
        echo, payload = self._client.echo, workload.payload
        return lambda: echo(payload)

    async def aclose(self) -> None:
        await self._client.aclose()


# -- blocking clients ------------------------------------------------------------------------


class _BlockingProxyClient:
    """A stage client called through blocking proxies (each call made in the calling thread, on
    a connection it owns meanwhile; the client's loop thread takes what exceeds its pool)."""

    def __init__(self, client: Any) -> None:
        from stages.v2_0.user_stub import InventoryApi, UserApi

        self._client = client
        self._users = client.proxy(UserApi)
        self._inventory = client.proxy(InventoryApi)

    def caller(self, workload: Workload) -> Callable[[], object]:
        if workload.is_small:
            get_user = self._users.get_user
            return lambda: get_user(SMALL_ID)
        echo, payload = self._inventory.echo, workload.payload
        return lambda: echo(payload)

    def close(self) -> None:
        self._client.close()


class V21Blocking(_BlockingProxyClient):
    """v2.1's blocking proxies, shared by the calling threads."""

    @classmethod
    def open(cls, target: Target) -> V21Blocking:
        from stages.v2_1 import Client, ClientConfig

        return cls(Client(target.host, target.port, ClientConfig(timeout=TIMEOUT)))


class V3Blocking(_BlockingProxyClient):
    """v3.x's blocking proxies (every governance feature on), shared by the calling threads."""

    @classmethod
    def open(cls, target: Target) -> V3Blocking:
        return cls(_v3_client(target))


class GrpcSync:
    """gRPC's blocking client: one channel, shared by the calling threads (it is thread-safe)."""

    def __init__(self, channel: Any) -> None:
        from stages.harness.peers import bench_echo_pb2_grpc

        self._channel = channel
        self._stub = bench_echo_pb2_grpc.BenchStub(channel)  # type: ignore[no-untyped-call]

    @classmethod
    def open(cls, target: Target) -> GrpcSync:
        import grpc

        from stages.harness.peers.grpc_peer import MAX_MESSAGE

        channel = grpc.insecure_channel(f"{target.host}:{target.port}", options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own (see grpc_peer)
        ])
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        return cls(channel)

    def caller(self, workload: Workload) -> Callable[[], object]:
        from stages.harness.peers.bench_echo_pb2 import Blob, GetUserRequest

        if workload.is_small:
            get_user, request = self._stub.GetUser, GetUserRequest(id=SMALL_ID)
            return lambda: get_user(request, timeout=TIMEOUT)
        echo, blob = self._stub.Echo, Blob(data=workload.payload)
        return lambda: echo(blob, timeout=TIMEOUT).data

    def close(self) -> None:
        self._channel.close()


class Pyro5Client:
    """A Pyro5 proxy: one per thread (a proxy belongs to the thread that uses it)."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy

    @classmethod
    def open(cls, target: Target) -> Pyro5Client:
        import Pyro5.api  # type: ignore[import-untyped]

        Pyro5.config.SOCK_NODELAY = True  # as on the server (see benchmarks.servers)
        proxy = Pyro5.api.Proxy(f"PYRO:bench@{target.host}:{target.port}")
        proxy._pyroTimeout = TIMEOUT
        proxy._pyroBind()  # connect now, not on the first measured call
        return cls(proxy)

    def caller(self, workload: Workload) -> Callable[[], object]:
        import serpent  # type: ignore[import-untyped]

        proxy = self._proxy
        if workload.is_small:
            return lambda: proxy.get_user(SMALL_ID)
        payload, to_bytes = workload.payload, serpent.tobytes
        return lambda: to_bytes(proxy.echo(payload))

    def close(self) -> None:
        self._proxy._pyroRelease()


class RpycClient:
    """An RPyC connection: one per thread. The remote methods are looked up once (each lookup
    through ``conn.root`` is a round trip of its own)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._get_user = connection.root.get_user
        self._echo = connection.root.echo

    @classmethod
    def open(cls, target: Target) -> RpycClient:
        import rpyc  # type: ignore[import-untyped]

        return cls(rpyc.connect(target.host, target.port,
                                config={"sync_request_timeout": TIMEOUT}))

    def caller(self, workload: Workload) -> Callable[[], object]:
        if workload.is_small:
            get_user = self._get_user
            return lambda: get_user(SMALL_ID)
        echo, payload = self._echo, workload.payload
        return lambda: echo(payload)

    def close(self) -> None:
        self._connection.close()




class EchoSocket:
    """A plain blocking socket against the bare asyncio echo: one per thread. What the
    blocking proxies are held to (one ``sendall``, then read the answer into a buffer)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @classmethod
    def open(cls, target: Target) -> EchoSocket:
        sock = socket.create_connection((target.host, target.port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio does
        return cls(sock)

    def caller(self, workload: Workload) -> Callable[[], object]:
        from stages.harness.peers.echo_peer import blocking_call

        return blocking_call(self._sock, workload.payload)

    def close(self) -> None:
        self._sock.close()
