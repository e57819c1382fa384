"""The ceiling: a bare asyncio length-prefixed echo, server and client.

No RPC can do less work per call than this and still be an RPC over asyncio: a call is one frame
out and one frame back on a TCP connection, with no header beyond the length, no codec, no method
lookup, no request id (answers are matched first-in first-out). Whatever our framework loses
against this peer is the price of its protocol, codec and dispatch; whatever this peer loses
against the raw socket is asyncio's own price, which no asyncio RPC can avoid.

Wire format
===========

Both directions carry the same frames::

    offset  size  field
    ------  ----  -----------------------------------------------
    0       4     body length N, unsigned, big-endian (``!I``)
    4       N     body (opaque bytes)

The server answers every frame with the same frame, in order. Because the answer to a frame is
byte-for-byte that frame, the server echoes the whole run of complete frames it has in one write
(one ``send`` per ``data_received``, however many frames arrived), which is what the fastest
possible server would do. The client batches the same way: frames of calls made while others
are in flight leave together at the end of the loop iteration (a lone call is written at once).

Run::

    python -m stages.harness.peers.echo_peer server --host 127.0.0.1 --port 0

Use::

    client = EchoPeerClient()
    await client.connect(host, port)
    assert await client.call(b"hi") == b"hi"
    await client.aclose()
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, cast

from stages.harness.lifecycle import AsyncClosing, AsyncService
from stages.harness.peers import run_server_command

__all__ = [
    "EchoPeerClient",
    "EchoServer",
    "EchoServerProtocol",
    "HEADER",
    "MAX_BODY",
    "blocking_call",
    "complete_prefix",
    "encode",
    "main",
]

HEADER: Final = struct.Struct("!I")
"""The 4-byte big-endian body length in front of every frame."""

MAX_BODY: Final = 64 * 1024 * 1024
"""Largest body either side accepts (64 MiB).

A length above it means the stream is not speaking this protocol (or is corrupt): without a limit
one bad header would make the reader buffer up to 4 GiB while waiting for a body that never comes.
"""


def encode(body: bytes) -> bytes:
    """Frame ``body``: its length, then the body.

    Raises:
        ValueError: ``body`` is longer than :data:`MAX_BODY`.
    """
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes exceeds MAX_BODY ({MAX_BODY})")
    return HEADER.pack(len(body)) + body


def blocking_call(sock: socket.socket, body: bytes) -> Callable[[], bytes]:
    """A call on a plain blocking socket connected to the echo: ``sendall`` the framed ``body``,
    then read the whole answer into a buffer kept between calls; returns the body sent back.
    The floor the blocking proxies are held to (benchmarks, notebook 03a)."""
    frame = encode(body)
    answer = memoryview(bytearray(len(frame)))

    def call() -> bytes:
        sock.sendall(frame)
        got = 0
        while got < len(answer):
            received = sock.recv_into(answer[got:])
            if not received:
                raise ConnectionResetError("the echo server closed the connection")
            got += received
        return answer[HEADER.size:].tobytes()

    return call


def complete_prefix(data: bytes | bytearray | memoryview) -> int:
    """Length of the longest prefix of ``data`` made only of complete frames.

    Pure (no I/O): the server echoes exactly this prefix and keeps the rest for later.

    Returns:
        An offset in ``[0, len(data)]``; 0 when not even the first frame is complete (including
        when fewer than 4 bytes are there).

    Raises:
        ValueError: a frame announces a body longer than :data:`MAX_BODY`.
    """
    size = len(data)
    pos = 0
    while size - pos >= HEADER.size:
        (length,) = HEADER.unpack_from(data, pos)
        if length > MAX_BODY:
            raise ValueError(f"frame at offset {pos} announces {length} bytes (> MAX_BODY)")
        end = pos + HEADER.size + length
        if end > size:
            break
        pos = end
    return pos


class EchoServerProtocol(asyncio.Protocol):
    """One server-side connection: writes back every complete frame it receives.

    Args:
        connections: the owning server's set of live protocols; this protocol adds itself on
            connect and removes itself on disconnect, so the server can close them all.
    """

    def __init__(self, connections: set[EchoServerProtocol]) -> None:
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        # Bytes of an incomplete frame, kept until the rest arrives. Usually empty: a client that
        # sends whole frames gets the no-copy path in data_received.
        self._buffer = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolved when the connection is gone (the socket is closed)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._buffer
        try:
            if not buffer:
                # Fast path: nothing pending, so complete frames at the front of ``data`` go back
                # as they are, without first being copied into the buffer.
                end = complete_prefix(data)
                if end:
                    transport.write(data if end == len(data) else data[:end])
                if end < len(data):
                    buffer += memoryview(data)[end:]
                return
            buffer += data
            end = complete_prefix(buffer)
        except ValueError:
            # Not our protocol: nothing sensible can be echoed, and nothing can be resynchronised.
            transport.abort()
            return
        if end:
            # A bytes copy, not a view of the buffer: the transport may keep a reference to what
            # it could not send at once, and the buffer is about to change. Copied through a
            # memoryview because slicing the bytearray would copy twice.
            with memoryview(buffer) as view:
                echo = view[:end].tobytes()
            transport.write(echo)
            del buffer[:end]

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests, so that the echoes
        # queue up in the client's socket buffer rather than in this process's memory.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        """Close the connection (pending echoes are flushed first)."""
        if self._transport is not None:
            self._transport.close()


class EchoServer(AsyncService):
    """The echo server in this process; an async context manager.

    Args:
        host: address to bind.
        port: port to bind; 0 lets the OS pick a free one (see :attr:`address`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[EchoServerProtocol] = set()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound.

        Raises:
            RuntimeError: the server is not started.
        """
        if self._server is None or not self._server.sockets:
            raise RuntimeError("EchoServer is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> EchoServer:
        """Bind and start accepting connections.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("EchoServer is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EchoServerProtocol(self._connections), self._host, self._port)
        return self

    async def aclose(self) -> None:
        """Stop accepting, close every connection and wait until their sockets are closed.

        Idempotent. Waiting for the sockets matters: ``Server.wait_closed`` does not wait for
        live connections before Python 3.12, and an event loop that ends with a transport still
        open warns (``ResourceWarning``).
        """
        server = self._server
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        await asyncio.gather(*(connection.closed for connection in connections))
        await server.wait_closed()

class _EchoClientProtocol(asyncio.Protocol):
    """The client's side of the connection: matches answers to waiting calls, oldest first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        # One future per call sent and not yet answered, in sending order. A cancelled call
        # stays in the queue (its answer is still coming and must be consumed in its turn); its
        # answer is dropped.
        self.waiters: deque[asyncio.Future[bytes]] = deque()
        self.buffer = bytearray()
        # Frames waiting for the end of this loop iteration, written then as one send (see send).
        self.pending: list[bytes] = []
        self._loop = loop
        self.closed: asyncio.Future[None] = loop.create_future()
        # Why calls fail once the connection is gone; None while it is up.
        self.error: Exception | None = None
        self.closing_by_us = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if buffer:
            buffer += data
            chunk: bytes | bytearray = buffer
        else:
            chunk = data
        waiters = self.waiters
        size = len(chunk)
        pos = 0
        # A memoryview slices the body out with one copy (slicing a bytearray copies twice);
        # it must be released before the buffer is resized, hence the ``with``.
        with memoryview(chunk) as view:
            while size - pos >= HEADER.size:
                (length,) = HEADER.unpack_from(view, pos)
                if length > MAX_BODY:
                    self._fail(ConnectionError(f"echo peer announced a {length}-byte answer"))
                    return
                end = pos + HEADER.size + length
                if end > size:
                    break
                if not waiters:
                    self._fail(ConnectionError("echo peer sent an answer nobody asked for"))
                    return
                waiter = waiters.popleft()
                if not waiter.done():  # done = the caller was cancelled and left
                    waiter.set_result(view[pos + HEADER.size:end].tobytes())
                pos = end
        if chunk is buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += memoryview(data)[pos:]

    def send(self, frame: bytes) -> None:
        """Write ``frame`` now if it is the only call in flight, else with the next batch.

        Why batch: with many calls in flight, one ``send`` system call per call costs more than
        the rest of the call; the frames queued during one loop iteration go out together
        (measured: about 2-3x the calls/s for small calls at 64 in flight). Why not always: a
        lone call gains nothing from waiting for the end of the iteration, so sequential
        latency stays one ``send`` away. Order is kept: a frame is written at once only when
        nothing is queued before it.
        """
        pending = self.pending
        if pending:
            pending.append(frame)
        elif len(self.waiters) <= 1:
            assert self.transport is not None
            self.transport.write(frame)
        else:
            pending.append(frame)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued frames as one chunk (dropped if the connection is closing: their
        calls are failed by ``connection_lost``)."""
        pending = self.pending
        if not pending:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()

    def _fail(self, error: Exception) -> None:
        """Fail every pending call with ``error`` and drop the connection."""
        if self.error is None:
            self.error = error
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.new_error())
        if self.transport is not None:
            self.transport.abort()

    def new_error(self) -> Exception:
        """A fresh copy of :attr:`error` to raise (one instance raised many times would pile
        up every raiser's traceback)."""
        assert self.error is not None
        return type(self.error)(*self.error.args)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing_by_us:
            error: Exception = ConnectionAbortedError(
                "the connection was closed by this client (aclose) while the call was in flight")
        elif exc is not None:
            error = ConnectionResetError(f"connection to the echo peer broke: {exc}")
        else:
            error = ConnectionResetError("the echo peer closed the connection")
        self._fail(error)
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)


class _BufferedEchoClientProtocol(_EchoClientProtocol, asyncio.BufferedProtocol):
    """The same client, receiving into one buffer it keeps (``recv_into``) instead of a new
    ``bytes`` object per read: asyncio's plain read asks for 256 KiB each time, which glibc may
    serve with ``mmap`` and give back with ``munmap``, per read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._read_buffer = memoryview(bytearray(256 * 1024))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes].tobytes())


class EchoPeerClient(AsyncClosing):
    """Client of the echo peer: one TCP connection, any number of calls in flight on it.

    Answers are matched to calls first-in first-out, which is correct because the server answers
    in order on one connection.

    Errors:
        * a call after :meth:`aclose` (or before :meth:`connect`) raises ``RuntimeError``;
        * calls in flight when the peer closes or breaks the connection raise
          ``ConnectionResetError``; those in flight when *we* close it raise
          ``ConnectionAbortedError``; an answer nobody asked for (or an oversized one) fails
          them with ``ConnectionError`` and drops the connection. After any of these the client
          stays unusable (reconnecting is not the job of a benchmark peer).

    Args:
        buffered_reads: receive into a buffer the client keeps (an ``asyncio.BufferedProtocol``),
            as v2.1's connections do, instead of asyncio's plain read, which makes a new 256 KiB
            object per read. Bare asyncio reads the plain way, so that is the default.
    """

    def __init__(self, *, buffered_reads: bool = False) -> None:
        self._protocol: _EchoClientProtocol | None = None
        self._protocol_class = _BufferedEchoClientProtocol if buffered_reads else _EchoClientProtocol

    async def connect(self, host: str, port: int) -> None:
        """Open the connection.

        Raises:
            OSError: the connection could not be made.
            RuntimeError: already connected.
        """
        if self._protocol is not None:
            raise RuntimeError("EchoPeerClient is already connected")
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: self._protocol_class(loop), host, port)
        self._protocol = protocol

    async def call(self, body: bytes) -> bytes:
        """Send ``body`` and return what the server sends back (the same bytes).

        Safe to run many times concurrently on one client. Cancelling a call is safe: its answer
        is dropped when it arrives and the other calls are unaffected.

        Raises:
            RuntimeError: not connected, or closed.
            ConnectionResetError: the peer closed or broke the connection.
            ConnectionAbortedError: :meth:`aclose` ran while the call was in flight.
            ConnectionError: the peer broke the protocol (the connection is dropped).
            ValueError: ``body`` is longer than :data:`MAX_BODY`.
        """
        protocol = self._protocol
        if protocol is None or protocol.closing_by_us:
            raise RuntimeError("EchoPeerClient is not connected")
        if protocol.error is not None:
            raise protocol.new_error()
        frame = encode(body)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Queue the waiter before writing: the answer cannot arrive before the next loop
        # iteration anyway, but this order is right even for a transport that reads eagerly.
        protocol.waiters.append(waiter)
        protocol.send(frame)
        return await waiter

    async def aclose(self) -> None:
        """Close the connection and wait until the socket is closed; idempotent."""
        protocol = self._protocol
        if protocol is None:
            return
        protocol.closing_by_us = True
        if protocol.transport is not None:
            protocol.transport.close()
        await protocol.closed

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stages.harness.peers.echo_peer server [--host H] [--port P]``; exit code."""
    return run_server_command("python -m stages.harness.peers.echo_peer",
                              "bare asyncio length-prefixed echo (the benchmark ceiling)",
                              EchoServer, argv)


if __name__ == "__main__":
    sys.exit(main())
