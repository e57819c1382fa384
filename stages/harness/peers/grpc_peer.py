"""The industrial baseline: the ``Bench`` service over gRPC's asyncio API (``grpc.aio``).

gRPC does in C what our framework does in Python (HTTP/2 framing, flow control, the connection's
I/O on its own thread) and uses protobuf (also C) for the payloads; only the handlers and the
glue run in Python. Comparing against it answers "how far is a pure-Python asyncio RPC from what
people would use instead?", on the same two cores and the same loopback, in the same run.

The service (``bench_echo.proto``, generated modules committed next to it; see
:mod:`~stages.harness.peers.regenerate`)::

    rpc GetUser(GetUserRequest) returns (User);   // ~100-byte answer derived from the id
    rpc Echo(Blob) returns (Blob);                // the bytes back, unchanged

Run::

    python -m stages.harness.peers.grpc_peer server --host 127.0.0.1 --port 0

Use::

    client = GrpcPeerClient()
    await client.connect(host, port)
    user = await client.get_user(7)
    await client.aclose()

Fairness notes: the server runs every handler on its event loop (``async def`` handlers, no
thread pool), like ours; the client gets its own subchannel pool so that it really owns one
HTTP/2 connection, the way each of our clients owns one TCP connection.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Final

import grpc
import grpc.aio

from stages.harness.lifecycle import AsyncClosing, AsyncService
from stages.harness.peers import bench_echo_pb2_grpc, run_server_command
from stages.harness.peers.bench_echo_pb2 import Blob, GetUserRequest, User

__all__ = [
    "BenchService",
    "GrpcPeerClient",
    "GrpcPeerServer",
    "MAX_MESSAGE",
    "main",
    "make_user",
]

MAX_MESSAGE: Final = 64 * 1024 * 1024
"""Largest message either side sends or accepts (64 MiB, the echo peer's limit too).

gRPC's default receive limit is 4 MiB; raising it keeps large-payload sweeps comparable between
the peers instead of failing on one side only.
"""

_MESSAGE_OPTIONS: Final = (
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
)

_NAMES: Final = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra",
                 "Barbara Liskov")


def make_user(user_id: int) -> User:
    """The user with this id: every field derived from the id, about 100 bytes serialized.

    The names are the ones the v1.0 demo service uses, padded so that the answer is the
    ~100-byte "small call" of the benchmarks.
    """
    full_name = _NAMES[user_id % len(_NAMES)]
    first, last = full_name.lower().split()
    return User(
        id=user_id,
        name=f"{full_name} (benchmark user {user_id:010d})",
        email=f"{first}.{last}.{user_id:010d}@users.benchmark.example.org",
    )


class BenchService(bench_echo_pb2_grpc.BenchServicer):
    """The ``rpcwalk.bench.Bench`` handlers: plain coroutines, no I/O of their own."""

    async def GetUser(  # noqa: N802 (the name is the RPC's, set by the proto)
        self,
        request: GetUserRequest,
        context: grpc.aio.ServicerContext[GetUserRequest, User],
    ) -> User:
        """Return :func:`make_user` of the requested id."""
        return make_user(request.id)

    async def Echo(  # noqa: N802
        self,
        request: Blob,
        context: grpc.aio.ServicerContext[Blob, Blob],
    ) -> Blob:
        """Return the request itself: the bytes come back without a copy on the Python side."""
        return request


class GrpcPeerServer(AsyncService):
    """The gRPC peer server in this process; an async context manager.

    Args:
        host: address to bind.
        port: port to bind; 0 lets the OS pick a free one (see :attr:`address`).
        grace: seconds in-flight calls get to finish when the server stops.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, grace: float = 1.0) -> None:
        self._host = host
        self._port = port
        self._grace = grace
        self._server: grpc.aio.Server | None = None
        self._bound_port = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound.

        Raises:
            RuntimeError: the server is not started.
        """
        if self._server is None:
            raise RuntimeError("GrpcPeerServer is not started")
        return self._host, self._bound_port

    async def start(self) -> GrpcPeerServer:
        """Bind and start serving.

        Raises:
            RuntimeError: already started, or the address could not be bound (gRPC reports a
                failed bind as ``RuntimeError``, or as port 0 in older versions).
        """
        if self._server is not None:
            raise RuntimeError("GrpcPeerServer is already started")
        server = grpc.aio.server(options=[
            *_MESSAGE_OPTIONS,
            # Port 0 must mean "a port nobody else has", not "share a port with another
            # process via SO_REUSEPORT" (gRPC's default on Linux).
            ("grpc.so_reuseport", 0),
        ])
        # The generated gRPC module has no type hints (protoc writes none); the ignore is for that.
        bench_echo_pb2_grpc.add_BenchServicer_to_server(  # type: ignore[no-untyped-call]
            BenchService(), server)
        port = server.add_insecure_port(f"{self._host}:{self._port}")
        if port == 0:
            raise RuntimeError(f"gRPC could not bind {self._host}:{self._port}")
        await server.start()
        self._server = server
        self._bound_port = port
        return self

    async def aclose(self) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and wait until stopped."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self._grace)

class GrpcPeerClient(AsyncClosing):
    """Client of the gRPC peer: one channel (one HTTP/2 connection), many calls in flight.

    Errors are gRPC's own: a failed call raises ``grpc.aio.AioRpcError`` (``.code()`` tells
    ``UNAVAILABLE`` from ``DEADLINE_EXCEEDED`` etc.); a call before :meth:`connect` or after
    :meth:`aclose` raises ``RuntimeError``.
    """

    def __init__(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub: bench_echo_pb2_grpc.BenchStub | None = None

    async def connect(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        """Open the channel and wait until its connection is up.

        gRPC connects lazily; waiting here keeps connection set-up out of the first measured
        call, as our clients' ``connect`` does.

        Raises:
            RuntimeError: already connected.
            TimeoutError: no connection within ``timeout`` seconds (the channel is closed).
        """
        if self._channel is not None:
            raise RuntimeError("GrpcPeerClient is already connected")
        channel = grpc.aio.insecure_channel(f"{host}:{port}", options=[
            *_MESSAGE_OPTIONS,
            # Channels to the same target share connections process-wide by default; a local
            # pool gives this client a connection of its own, so "one client" means "one
            # connection" for both peers and for our framework.
            ("grpc.use_local_subchannel_pool", 1),
        ])
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except BaseException:
            await channel.close()
            raise
        self._channel = channel
        self._stub = bench_echo_pb2_grpc.BenchStub(channel)  # type: ignore[no-untyped-call]

    def _require_stub(self) -> bench_echo_pb2_grpc.BenchStub:
        if self._stub is None:
            raise RuntimeError("GrpcPeerClient is not connected")
        return self._stub

    async def get_user(self, id: int) -> User:  # noqa: A002 (the RPC's field name)
        """Call ``GetUser``; returns the ``User`` message.

        Raises:
            grpc.aio.AioRpcError: the call failed.
            RuntimeError: not connected, or closed.
        """
        user: User = await self._require_stub().GetUser(GetUserRequest(id=id))
        return user

    async def echo(self, data: bytes) -> bytes:
        """Call ``Echo``; returns the bytes sent back (equal to ``data``).

        Raises:
            grpc.aio.AioRpcError: the call failed.
            RuntimeError: not connected, or closed.
        """
        blob: Blob = await self._require_stub().Echo(Blob(data=data))
        return blob.data

    async def aclose(self) -> None:
        """Close the channel (calls still in flight are cancelled); idempotent."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stages.harness.peers.grpc_peer server [--host H] [--port P]``; exit code."""
    return run_server_command("python -m stages.harness.peers.grpc_peer",
                              "the Bench service over grpc.aio (the industrial baseline)",
                              GrpcPeerServer, argv)


if __name__ == "__main__":
    sys.exit(main())
