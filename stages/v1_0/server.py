"""The v1.0 server: parse a request frame, run the method, answer with a response frame.

Two layers, kept apart on purpose:

* :meth:`Server.handle` is the whole application logic and does no I/O: a request
  :class:`~stages.v1_0.protocol.Frame` in, a response frame out. Tests call it directly.
* :class:`ServerConnection` is the thin asyncio adapter (asyncio's ``Protocol`` plays the part of a
  Netty channel handler): bytes arrive in ``data_received``, go into the connection's own
  :class:`~stages.v1_0.protocol.FrameCodec`, and each complete frame is handed to ``handle``.

Everything that can go wrong with one client stays with that client. A frame that cannot be
parsed is answered with an error where the header was readable, and that connection, and only
that one, is closed. The server keeps serving everyone else.

Nothing a client does makes the server hold memory without limit:

* **Frames.** A frame's size is checked from its header (``max_frame_size``), so a connection
  holds at most one unfinished frame, and at most ``max_connections`` connections are open.
* **Answers.** An answer too large to send becomes a TOO_LARGE error for its request; the
  connection goes on.
* **Answers the client does not read.** When the transport's write buffer passes its high-water
  mark, asyncio calls ``pause_writing``: the connection then stops reading requests until the
  client has read enough for ``resume_writing``. A client that sends and never reads is slowed
  down by TCP instead of filling the server's memory with answers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, cast

from stages.v1_0.config import ServerConfig
from stages.v1_0.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Status,
    clip,
)
from stages.v1_0.messages import TEXT_CODEC, decode_request, encode_result
from stages.v1_0.protocol import Frame, FrameCodec, FrameTooLargeError, FrameType

__all__ = ["Server", "ServerConnection"]

log = logging.getLogger(__name__)


class Server:
    """A server that runs registered functions for remote callers.

    Usage::

        server = Server(ServerConfig(port=0))
        server.register("userService", {"getUser": users.get_user})
        async with server:
            print(server.address)
            await server.serve_forever()

    Args:
        config: listening address and limits; defaults to :class:`ServerConfig()`.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._services: dict[str, dict[str, Callable[..., Any]]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[ServerConnection] = set()

    # -- application logic (no I/O) ------------------------------------------------------------

    def register(self, service: str, methods: Mapping[str, Callable[..., Any]]) -> None:
        """Publish functions under a service name.

        The server keeps an explicit table *service -> method name -> function*. A request can
        only reach what is in that table; the server never looks a name up on an object, so
        nothing else (private helpers, dunder methods) is reachable from the network.

        Raises:
            ValueError: the service is already registered or a method is not callable.
        """
        if service in self._services:
            raise ValueError(f"service {service!r} is already registered")
        for name, fn in methods.items():
            if not callable(fn):
                raise ValueError(f"{service}.{name} is not callable")
        self._services[service] = dict(methods)

    def handle(self, frame: Frame) -> Frame:
        """Answer one request frame. Never raises: every failure becomes an error response.

        Args:
            frame: a decoded frame of type REQUEST.

        Returns:
            A RESPONSE frame with the same request id: status OK and the result's fields, or an
            error status and a one-line message.
        """
        try:
            if frame.type != FrameType.REQUEST:
                raise RemoteProtocolError(f"expected a REQUEST frame, got type {frame.type}")
            if frame.codec != TEXT_CODEC:
                raise RemoteProtocolError(f"codec {frame.codec} is not supported: v1.0 speaks "
                                          f"only {TEXT_CODEC} (UTF-8 text)", Status.BAD_REQUEST)
            request = decode_request(frame.body)
            fn = self._lookup(request.service, request.method)
            try:
                inspect.signature(fn).bind(**request.params)
            except TypeError as exc:
                raise RemoteProtocolError(
                    clip(f"wrong parameters for {request.service}:{request.method}: {exc}"),
                    Status.BAD_REQUEST,
                ) from None
            result = fn(**request.params)
            if not isinstance(result, Mapping):
                result = {"value": result}
            return Frame(FrameType.RESPONSE, frame.request_id, encode_result(result))
        except ProtocolError as exc:
            return self.error_frame(frame.request_id, exc.status, str(exc))
        except _NotFound as exc:
            return self.error_frame(frame.request_id, Status.NOT_FOUND, str(exc))
        except Exception as exc:  # the method itself failed: report it, keep serving
            return self.error_frame(
                frame.request_id, Status.INTERNAL, clip(f"{type(exc).__name__}: {exc}", 2000)
            )

    @staticmethod
    def error_frame(request_id: int, status: Status, message: str) -> Frame:
        """A RESPONSE frame carrying an error status and its message as UTF-8 text."""
        return Frame(
            FrameType.RESPONSE, request_id, message.encode("utf-8", "replace"), status=status
        )

    def encode_answer(self, codec: FrameCodec, answer: Frame) -> bytes:
        """Encode an answer; one too large to send becomes a TOO_LARGE error for its request.

        The request fitted in a frame, but its answer need not: an ``echo`` of a value near the
        limit, a query that finds a lot. Sending it is out of the question (the client would
        refuse to read it, and the limit is the server's promise too). Closing the connection,
        as a protocol error would, is wrong as well: the call broke no rule, and on a connection
        shared by many calls (v2.1) every other call would fail with it. So that one call gets
        an error, and the connection goes on.

        Every frame a server sends goes through here, error frames too, so none exceeds
        ``codec.max_frame_size``: with a very small limit the error's message is cut short.
        """
        try:
            return codec.encode(answer)
        except LocalProtocolError as exc:
            if exc.status != Status.TOO_LARGE:
                raise
        limit = codec.max_frame_size
        log.info("answer to request %d is %d bytes, more than max_frame_size (%d): sent "
                 "TOO_LARGE instead", answer.request_id, len(answer.body), limit)
        error = self.error_frame(answer.request_id, Status.TOO_LARGE,
                                 f"the answer is {len(answer.body)} bytes, more than this server "
                                 f"sends (max_frame_size {limit} bytes)")
        return codec.encode(error._replace(body=error.body[:limit]))

    def _lookup(self, service: str, method: str) -> Callable[..., Any]:
        methods = self._services.get(service)
        if methods is None:
            raise _NotFound(f"unknown service {clip(repr(service))}")
        fn = methods.get(method)
        if fn is None:
            raise _NotFound(f"unknown method {clip(repr(method))} of service {clip(repr(service))}")
        return fn

    # -- networking ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on; the real port when the config said 0."""
        if self._server is None:
            raise RuntimeError("server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    async def start(self) -> None:
        """Start listening; returns once the socket is bound."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.make_connection, self.config.host, self.config.port
        )

    def make_connection(self) -> asyncio.BaseProtocol:
        """Build the protocol object for one accepted connection (overridden by later stages)."""
        return ServerConnection(self)

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def aclose(self) -> None:
        """Stop accepting, close every open connection, and wait until the socket is released."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._connections):
            conn.close()
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Connections report themselves so that aclose() can close them and tests can see that a
    # dead client left nothing behind.
    def _attach(self, conn: ServerConnection) -> None:
        self._connections.add(conn)

    def refusal(self, peer: object) -> Frame | None:
        """The answer that turns a new connection away, or None to admit it.

        Past ``max_connections`` a new connection is accepted (asyncio accepts before it asks
        us) only to be told why and closed; a line in the log says so too. The frame has request
        id 0, as for any error that belongs to no call.
        """
        open_now = len(self._connections)
        if open_now < self.config.max_connections:
            return None
        log.warning("refusing a connection from %s: %d connections open (max_connections)",
                    peer, open_now)
        return self.error_frame(0, Status.UNAVAILABLE, f"too many connections ({open_now} open, "
                                "max_connections); try again later")

    def _detach(self, conn: ServerConnection) -> None:
        self._connections.discard(conn)


class _NotFound(Exception):
    """No such service or method (internal; becomes a NOT_FOUND response)."""


class ServerConnection(asyncio.Protocol):
    """One accepted connection: bytes in, frames through :meth:`Server.handle`, bytes out.

    Two timers protect the server from clients that hold a connection without using it: a frame
    that has started to arrive must be complete within ``frame_timeout``, and a connection with
    nothing in flight is closed after ``idle_timeout``.

    A client that does not read its answers is pushed back: see :meth:`pause_writing`.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        config = server.config
        self.codec = FrameCodec(max_frame_size=config.max_frame_size)
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._partial_deadline: float | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        transport = cast(asyncio.Transport, transport)
        refusal = self.server.refusal(transport.get_extra_info("peername"))
        if refusal is not None:
            transport.write(self.server.encode_answer(self.codec, refusal))
            transport.close()
            return
        self.transport = transport
        self.server._attach(self)
        self._arm_timer(frame_done=False)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.codec.feed(data)
        self._handle_frames()

    def _handle_frames(self) -> None:
        """Answer every complete frame in the codec, unless the client stops reading answers."""
        transport = self.transport
        assert transport is not None
        frame_done = False
        try:
            for frame in self.codec.frames():
                frame_done = True
                if frame.type != FrameType.REQUEST:  # a client sends requests, nothing else
                    self._fail(RemoteProtocolError(
                        f"expected a REQUEST frame, got type {frame.type}"), frame.request_id)
                    return
                transport.write(self.server.encode_answer(self.codec, self.server.handle(frame)))
                if self._writing_paused:
                    break  # the rest waits in the codec until the client reads (resume_writing)
        except FrameTooLargeError as exc:
            # The header was readable, so this request gets a clear answer. The connection
            # cannot go on: we refuse to read (and so to skip) a body of that size.
            self._fail(exc, exc.request_id)
            return
        except RemoteProtocolError as exc:
            self._fail(exc, 0)
            return
        self._arm_timer(frame_done)

    def pause_writing(self) -> None:
        """The client reads its answers more slowly than we make them: stop reading requests.

        asyncio calls this when the transport's write buffer passes its high-water mark (64 KiB
        by default). Requests already read wait, unparsed, in the codec; TCP's flow control then
        stops the client from sending more. Without this, a client that sends requests and
        never reads the answers would make the server buffer answers until memory runs out.
        """
        self._writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up (the buffer fell below its low-water mark): read again."""
        self._writing_paused = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._handle_frames()  # requests that waited in the codec first
        if not self._writing_paused and not transport.is_closing():
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        # The client finished sending. Whatever it sent has been answered; a half frame left in
        # the buffer will never be completed, so there is nothing more to do but close.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        self.server._detach(self)

    def close(self) -> None:
        """Close this connection (used by :meth:`Server.aclose`)."""
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: ProtocolError, request_id: int) -> None:
        log.info("closing connection after protocol error: %s", exc)
        assert self.transport is not None
        self.transport.write(self.server.encode_answer(
            self.codec, Server.error_frame(request_id, exc.status, str(exc))))
        self.transport.close()

    def _arm_timer(self, frame_done: bool) -> None:
        """Set the one timer this connection has: the frame deadline or the idle deadline.

        A frame's deadline runs from the read in which its first bytes arrived, so it measures
        that frame alone. When a read completes a frame, the bytes left in the codec are the
        start of the next frame: its deadline starts now. When a read completes nothing, the
        frame that is arriving keeps the deadline it has, so trickling bytes cannot move it.
        While we do not read (the client does not read its answers), frames in the codec wait
        on us, not on the client: only the idle deadline runs.
        """
        loop = asyncio.get_running_loop()
        if self.codec.buffered and not self._writing_paused:
            if self._partial_deadline is not None and not frame_done:
                return  # the same frame is still arriving: its deadline stands
            self._partial_deadline = deadline = loop.time() + self.server.config.frame_timeout
        else:
            self._partial_deadline = None
            deadline = loop.time() + self.server.config.idle_timeout
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        if self._writing_paused:
            # It has read none of its answers for idle_timeout: it will not read the rest, and
            # close() would wait for them to leave. Drop the connection and what it holds.
            log.info("aborting a connection whose client reads no answers")
            self.transport.abort()
            return
        what = "incomplete frame" if self._partial_deadline is not None else "idle connection"
        log.info("closing %s after timeout", what)
        self.transport.close()
