"""The v2.1 server: one long-lived connection carries many calls, and a dead client is noticed.

What v2.0's server does per call is unchanged and inherited: ``prepare`` (check the frame,
decode the call), ``resolve`` (find the bound method, check the arguments), ``respond`` (encode
the outcome). What v2.1 replaces is the connection: :class:`ServerConnection` is rewritten whole,
because a connection is no longer one request and one answer but a stream of both, in any order,
for as long as the client lives.

* **Concurrency within a connection.** A plain method runs at once, inline, as in v2.0: it holds
  the event loop only for as long as it computes. A coroutine method (``async def``) runs as its
  own task, so a call that waits (on a database, on another service) does not hold up the calls
  behind it; its answer goes out when it is ready, in whatever order that is. Answers are
  matched to calls by request id on the client.
* **Push back.** At most ``max_concurrent_calls`` tasks run per connection. Past that the server
  stops reading the connection; frames already read wait in the codec, and TCP's flow control
  slows the client down. Nothing grows without limit.
* **Heartbeat.** Every byte read counts as a sign of life. A client PING is answered with PONG.
  A connection silent for ``idle_timeout`` is closed, and everything held for it (tasks, buffers,
  its entry in the connection table) is released. A client that pings more often than
  ``min_ping_interval`` collects strikes, and past ``max_ping_strikes`` it gets GOAWAY
  ``too_many_pings`` and is disconnected.
* **Graceful shutdown.** :meth:`Server.aclose` stops accepting, sends GOAWAY ``shutdown`` to every
  client, lets the calls in flight finish within ``shutdown_grace``, then closes. Requests that
  arrive after the GOAWAY are refused with UNAVAILABLE *without being run*, so a client may
  safely send them elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from types import CoroutineType
from typing import Any

from stages.v2_0 import server as v2_0
from stages.v2_0.errors import ProtocolError, RemoteProtocolError, Status
from stages.v2_0.serializers import Invocation, Outcome, Serializer
from stages.v2_1.config import ServerConfig
from stages.v2_1.heartbeat import Action, Heartbeat
from stages.v2_1.protocol import (
    NEED_DATA,
    PONG_FRAME,
    Frame,
    FrameCodec,
    FrameTooLargeError,
    FrameType,
    GoAway,
    goaway_frame,
)
from stages.v2_1.reader import OwnBufferReader
from stages.v2_1.writer import BatchedWriter

__all__ = ["Server", "ServerConnection"]

log = logging.getLogger(__name__)

# The frame types as plain ints: the loop below compares every frame's type, and reading an
# enum member costs several times more than reading a global.
_REQUEST, _PING, _PONG = int(FrameType.REQUEST), int(FrameType.PING), int(FrameType.PONG)
_OK = Status.OK


class Server(v2_0.Server):
    """A v2.0 server whose connections are long-lived and multiplexed.

    Usage is v2.0's (``bind``, ``start``, ``serve_forever``); ``aclose`` is now graceful.
    """

    config: ServerConfig

    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__(config or ServerConfig())

    def check_method(self, implementation: object, name: str, fn: Callable[..., Any]) -> None:
        """Coroutine methods are welcome from v2.1 on: each call runs as its own task."""

    def make_connection(self) -> ServerConnection:
        return ServerConnection(self)

    @property
    def connections(self) -> list[ServerConnection]:
        """The open connections (for tests and monitoring)."""
        return list(self._connections)  # type: ignore[arg-type]

    async def aclose(self, grace: float | None = None) -> None:
        """Shut down gracefully: stop accepting, GOAWAY, finish calls in flight, close.

        Args:
            grace: seconds to wait for calls in flight; ``config.shutdown_grace`` when None.
                Calls still running after it are cancelled.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = self.connections
        for conn in connections:
            conn.go_away(GoAway.SHUTDOWN)
        running = [task for conn in connections for task in conn.running.values()]
        if running:
            await asyncio.wait(running, timeout=self.config.shutdown_grace if grace is None else grace)
        for conn in connections:
            conn.close()
        # Return only once every connection has been released (connection_lost has run).
        lost = [conn.lost for conn in connections if not conn.lost.done()]
        if lost:
            await asyncio.wait(lost, timeout=1.0)
        for conn in connections:
            if not conn.lost.done():
                conn.abort()
        await server.wait_closed()


class ServerConnection(BatchedWriter, OwnBufferReader, asyncio.BufferedProtocol):
    """One client's long-lived connection: frames in, calls run, answers out in any order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = config = server.config
        self.codec = FrameCodec(max_frame_size=config.max_frame_size)
        self.transport: asyncio.Transport | None = None
        #: Coroutine calls running now, by request id.
        self.running: dict[int, asyncio.Task[Any]] = {}
        self.going_away = False
        self._loop = asyncio.get_running_loop()
        self._heartbeat = Heartbeat(None, config.idle_timeout, self._loop.time())
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._partial_since: float | None = None
        self._last_ping = float("-inf")
        self._strikes = 0
        #: Done once the connection is closed and everything held for it released.
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._attach(self)  # type: ignore[arg-type]
        self._heartbeat.on_read(self._loop.time())
        self._schedule(self._loop.time() + self.config.idle_timeout)

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()
        self._heartbeat.last_read = now  # inlined on_read(): this runs for every read
        codec = self.codec
        codec.feed(data)
        self._process()
        if codec.buffered and not self._reading_paused:
            if self._partial_since is None:
                # A frame has started to arrive: it must be complete within frame_timeout.
                self._partial_since = now
                deadline = now + self.config.frame_timeout
                if self._timer is None or self._timer.when() > deadline:
                    self._schedule(deadline)
        else:
            self._partial_since = None

    def connection_lost(self, exc: Exception | None) -> None:
        # Release everything held for this client: its running calls, its timer, its buffers and
        # its entry in the server's table.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self.running.values():
            task.cancel()
        self.running.clear()
        self.transport = None
        self.codec = FrameCodec(max_frame_size=0)
        self.server._detach(self)  # type: ignore[arg-type]
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        # The client does not read its answers fast enough: stop reading its requests too.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self.transport.resume_reading()

    # -- frames ----------------------------------------------------------------------------------

    def _process(self) -> None:
        """Handle every buffered frame, unless too many calls are running already."""
        transport = self.transport
        if transport is None:
            return
        out: list[bytes] = []
        codec = self.codec
        running = self.running
        limit = self.config.max_concurrent_calls
        chunk = self.FIRST_CHUNK
        try:
            while len(running) < limit:
                frame = codec.next_frame()
                if frame is NEED_DATA:
                    break
                ftype = frame[0]
                if ftype == _REQUEST:
                    answer = self._on_request(frame)
                    if answer is not None:
                        out.append(codec.encode(answer))
                        if len(out) >= chunk:
                            # Send answers as they are made, in growing chunks, so the client
                            # starts on them while this side works on the rest (see writer).
                            transport.write(b"".join(out))
                            out.clear()
                            chunk = self.next_chunk(chunk)
                elif ftype == _PING:
                    if not self._on_ping(out):
                        return
                elif ftype != _PONG:
                    raise RemoteProtocolError(f"unexpected frame type {ftype} from a client")
            else:
                # Too many calls running: stop reading; frames already read wait in the codec.
                if not self._reading_paused:
                    self._reading_paused = True
                    transport.pause_reading()
                    out.append(PONG_FRAME)  # we are alive, only busy (see _on_timer)
                    self._schedule(self._loop.time() + self.config.min_ping_interval)
        except FrameTooLargeError as exc:
            self._fail(exc, exc.request_id, out)
        except ProtocolError as exc:
            self._fail(exc, 0, out)
        finally:
            if out and self.transport is not None:
                self.transport.write(b"".join(out))

    def _on_request(self, frame: Frame) -> Frame | None:
        server = self.server
        rid = frame.request_id
        if self.going_away:
            return server.error_frame(rid, Status.UNAVAILABLE, "server is shutting down; the "
                                      "call was not run")
        prepared = server.prepare(frame)
        if isinstance(prepared, Frame):
            return prepared
        serializer, invocation = prepared
        target = server.resolve(invocation)
        if isinstance(target, tuple):
            return server.respond(rid, serializer, invocation, *target)
        try:
            value = target(*invocation.args, **invocation.kwargs)
        except Exception as exc:
            return server.respond(rid, serializer, invocation, *server.error_outcome(exc))
        if type(value) is CoroutineType:  # an async def method: run it as its own task
            self._start_task(rid, serializer, invocation, value)
            return None
        outcome = tuple.__new__(Outcome, (value, None))  # Outcome(value), faster
        return server.respond(rid, serializer, invocation, _OK, outcome)

    def _start_task(self, rid: int, serializer: Serializer, invocation: Invocation,
                    coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        self.running[rid] = task
        task.add_done_callback(partial(self._task_done, rid, serializer, invocation))

    def _task_done(self, rid: int, serializer: Serializer, invocation: Invocation,
                   task: asyncio.Task[Any]) -> None:
        if self.running.pop(rid, None) is None or task.cancelled():
            return  # the connection is gone, or the call was cancelled with it
        exc = task.exception()
        if exc is None:
            status, outcome = Status.OK, Outcome(value=task.result())
        elif isinstance(exc, Exception):
            status, outcome = self.server.error_outcome(exc)
        else:  # KeyboardInterrupt, SystemExit: not ours to swallow
            raise exc
        # Answers of tasks that finish in the same turn of the loop leave together.
        self.write(self.codec.encode(self.server.respond(rid, serializer, invocation, status,
                                                         outcome)))
        if self._reading_paused and len(self.running) < self.config.max_concurrent_calls:
            self._reading_paused = False
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self.transport is None:
            return
        self._process()  # frames that waited in the codec first
        if not self._reading_paused:
            self.transport.resume_reading()

    def _on_ping(self, out: list[bytes]) -> bool:
        now = self._loop.time()
        if now - self._last_ping < self.config.min_ping_interval:
            self._strikes += 1
        else:
            self._strikes = 0
        self._last_ping = now
        if self._strikes > self.config.max_ping_strikes:
            log.info("client pinged %d times within %.3g s: GOAWAY too_many_pings",
                     self._strikes + 1, self.config.min_ping_interval)
            out.append(goaway_frame(GoAway.TOO_MANY_PINGS))
            assert self.transport is not None
            self.transport.write(b"".join(out))
            out.clear()
            self.close()
            return False
        out.append(PONG_FRAME)
        return True

    # -- writing, timers, closing ----------------------------------------------------------------

    def flush(self) -> None:
        super().flush()
        if self.going_away and not self.running:
            self.close()

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        now = self._loop.time()
        if self._reading_paused:
            # We stopped reading by choice (push back): the client's pings wait unread, so its
            # silence proves nothing. Suspend the verdict, and show the client that we are alive
            # (an unasked PONG), or it would take our silence for death. The pause ends when
            # calls finish, so this cannot last longer than the calls themselves.
            self._heartbeat.on_read(now)
            self.transport.write(PONG_FRAME)
            self._schedule(now + self.config.min_ping_interval)
            return
        action, next_poll = self._heartbeat.poll(now)
        if action is Action.CLOSE:
            log.info("client silent for %.3g s: closing its connection", self.config.idle_timeout)
            # Say why, then close. A dead client may never take the bytes, and close() waits
            # for them to leave: abort shortly after if it has not completed by then.
            self.transport.write(goaway_frame(GoAway.IDLE))
            self.transport.close()
            self._timer = self._loop.call_later(1.0, self._abort)
            return
        if self._partial_since is not None:
            deadline = self._partial_since + self.config.frame_timeout
            if now >= deadline:
                log.info("frame incomplete after %.3g s: closing", self.config.frame_timeout)
                self.transport.abort()
                return
            next_poll = min(next_poll, deadline)
        self._schedule(next_poll)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: ProtocolError, request_id: int, out: list[bytes]) -> None:
        log.info("closing connection after protocol error: %s", exc)
        out.append(self.codec.encode(self.server.error_frame(request_id, exc.status, str(exc))))
        assert self.transport is not None
        self.transport.write(b"".join(out))
        out.clear()
        self.close()

    def go_away(self, reason: GoAway) -> None:
        """Tell the client to send no new calls here; close once running calls are done."""
        if self.transport is None or self.going_away:
            return
        self.going_away = True
        self.transport.write(goaway_frame(reason))
        if not self.running:
            self._loop.call_soon(self.close)

    def close(self) -> None:
        """Close the connection after writing what is buffered."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, buffered bytes and all."""
        if self.transport is not None:
            self.transport.abort()
