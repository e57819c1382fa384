"""The v2.1 server: one long-lived connection carries many calls, and a dead client is noticed.

What v2.0's server does per call is unchanged and inherited: ``prepare`` (check the frame,
decode the call), ``resolve`` (find the bound method, check the arguments), ``respond`` (encode
the outcome). What v2.1 replaces is the connection: :class:`ServerConnection` is rewritten whole,
because a connection is no longer one request and one answer but a stream of both, in any order,
for as long as the client lives.

* **Three ways to run a method.** Calls of one connection must not wait for each other, and
  nothing a method does may stop the event loop, which serves every client's calls *and*
  heartbeats. So how a method runs is decided once, when it is bound (:class:`Run`), as
  Starlette and FastAPI decide it:

  - a coroutine method (``async def``) runs as its own task on the event loop: a call that
    waits (on a database, on another service) holds up nobody;
  - a plain method (``def``) runs in a thread pool of ``max_workers`` threads. The server cannot
    tell whether a plain method blocks (``time.sleep``, a disk, a lock, a library without
    asyncio), and one that blocks on the event loop would stall every client for as long;
  - a plain method known to be quick, pure computation that never waits, may run *inline*, on
    the event loop, at once, as in v2.0: ``bind(Api, impl, inline=True)``, or
    ``inline=("get_user",)`` for some methods. It saves the trip to a thread and back (the
    benchmark measures each way), and is a promise the method keeps.

  Answers go out when they are ready, in whatever order that is; the client matches them to
  calls by request id. So a request id may not be reused while its call runs: the answer
  would belong to two calls. The server refuses such a connection with a protocol error.
* **Push back.** Whatever a client sends, the server holds a bounded amount for it, and past
  each bound it stops *reading* (frames already read wait in the codec, and TCP's flow control
  slows the client down) instead of buffering more:

  - calls running: at most ``max_concurrent_calls`` per connection and ``max_server_calls`` on
    the whole server; the latter stops every connection until a quarter of them have finished
    (a high- and a low-water mark, so that connections do not flap on every call);
  - answers the client does not read: when the transport's write buffer passes its high-water
    mark (``pause_writing``), until it drains (``resume_writing``);
  - unfinished frames: one per connection, at most ``max_frame_size`` (v1.0), on at most
    ``max_connections`` connections (v1.0).

  An answer larger than ``max_frame_size`` becomes a TOO_LARGE error for its call (v1.0's
  ``encode_answer``); the connection and its other calls go on.
* **Heartbeat.** Every byte read counts as a sign of life. A client PING is answered with PONG.
  A connection silent for ``idle_timeout`` is closed, and everything held for it (running calls,
  buffers, its entry in the connection table) is released. While the server pushes back because
  of its *own* calls, silence proves nothing, and the verdict waits; a client that does not read
  its answers gets no such allowance. A frame must arrive within ``frame_timeout`` of its first
  byte. A client that pings more often than ``min_ping_interval`` collects strikes, and past
  ``max_ping_strikes`` it gets GOAWAY ``too_many_pings`` and is disconnected.
* **Cancellation.** When a connection closes, every call it started is cancelled: a task at its
  next ``await``, a thread-pool call that has not started yet never starts. A thread-pool call
  already running cannot be interrupted (Python cannot stop a thread): it runs to its end, and
  its result is dropped; nothing is written to the closed connection.
* **Graceful shutdown.** :meth:`Server.aclose` stops accepting, sends GOAWAY ``shutdown`` to every
  client, lets the calls in flight (tasks and thread-pool calls) finish within
  ``shutdown_grace``, then closes, and shuts the thread pool down. Requests that arrive after the
  GOAWAY are refused with UNAVAILABLE *without being run*, so a client may safely send them
  elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import inspect
import logging
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import CoroutineType
from typing import Any, cast

from stages.v2_0 import server as v2_0
from stages.v2_0.api import api_spec
from stages.v2_0.errors import ApiDefinitionError, ProtocolError, RemoteProtocolError, Status
from stages.v2_0.serializers import ErrorInfo, Invocation, Outcome, Serializer
from stages.v2_1 import fastpath
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

__all__ = ["Server", "ServerConnection", "Run"]

log = logging.getLogger(__name__)


class Run(enum.Enum):
    """How the server runs a bound method; decided once, when the method is bound."""

    #: As its own asyncio task on the event loop: coroutine methods (``async def``).
    TASK = "task"
    #: In the server's thread pool: plain methods, which may block.
    THREAD = "thread"
    #: On the event loop, at once: plain methods bound with ``inline=``, known to be quick.
    INLINE = "inline"


def _is_coroutine_method(fn: object) -> bool:
    # unwrap(): a method decorated with functools.wraps is judged by the function it wraps.
    return callable(fn) and inspect.iscoroutinefunction(inspect.unwrap(fn))


class Server(v2_0.Server):
    """A v2.0 server whose connections are long-lived and multiplexed.

    Usage is v2.0's (``bind``, ``start``, ``serve_forever``); ``bind`` takes ``inline=`` for
    plain methods that may run on the event loop, and ``aclose`` is now graceful.
    """

    config: ServerConfig

    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__(config or ServerConfig())
        #: How each bound method runs, by (API address, method name).
        self.runs: dict[tuple[str, str], Run] = {}
        #: Calls running now on every connection: tasks and thread-pool calls.
        self.calls_running = 0
        #: The same calls, by API address. A call counts until its task or thread ends, or its
        #: connection is lost: a thread-pool call that already started then runs on uncounted
        #: (no thread can be stopped), bounded by ``max_workers`` like every pool call.
        self.calls_by_api: collections.Counter[str] = collections.Counter()
        self._waiting_for_room: set[ServerConnection] = set()
        self._pool: ThreadPoolExecutor | None = None

    def check_method(self, implementation: object, name: str, fn: Callable[..., Any]) -> None:
        """Coroutine methods are welcome from v2.1 on: each call runs as its own task."""

    def bind(self, interface: type, implementation: object, *,
             inline: bool | Collection[str] = False) -> str:
        """Bind ``implementation`` to the address of ``interface`` (as v2.0), and decide how
        each of its methods runs (:class:`Run`).

        Args:
            inline: plain methods to run on the event loop instead of the thread pool: True for
                all of them, or a collection of names. Only for methods that never block and
                return quickly: while one runs, no other client is served.

        Returns:
            The API address.

        Raises:
            ApiDefinitionError: as v2.0's ``bind``; or ``inline`` names a method the interface
                does not declare, or a coroutine method (those always run as tasks).
        """
        spec = api_spec(interface)
        if isinstance(inline, str):
            raise ApiDefinitionError(f"inline= takes a collection of names, e.g. "
                                     f"inline=({inline!r},)")
        chosen = set(spec.methods) if inline is True else set(inline or ())
        if unknown := chosen - set(spec.methods):
            raise ApiDefinitionError(f"inline= names {sorted(unknown)}, which "
                                     f"{interface.__qualname__} does not declare")
        if inline is not True:
            for name in sorted(chosen):
                if _is_coroutine_method(getattr(implementation, name, None)):
                    raise ApiDefinitionError(f"{type(implementation).__qualname__}.{name} is a "
                                             "coroutine: it runs as a task, never inline")
        address = super().bind(interface, implementation)
        if self.config.fastpath:  # the hot path's quicker argument check
            binding = self._bindings[address]
            self._bindings[address] = dataclasses.replace(binding,
                                                          spec=fastpath.quick_spec(binding.spec))
        for name, fn in self._bindings[address].methods.items():
            if _is_coroutine_method(fn):
                self.runs[address, name] = Run.TASK
            else:
                self.runs[address, name] = Run.INLINE if name in chosen else Run.THREAD
        return address

    def _rebuild_serializers(self) -> None:
        # v2.0's serializers, and beside them the hot path's (pickle with records, id 3).
        super()._rebuild_serializers()
        if not self.config.fastpath:
            return
        for serializer in list(self._serializers.values()):
            quick = fastpath.faster(serializer)
            self._serializers[quick.serializer_id] = quick

    def make_connection(self) -> ServerConnection:
        return ServerConnection(self)

    @property
    def connections(self) -> list[ServerConnection]:
        """The open connections (for tests and monitoring)."""
        return list(self._connections)  # type: ignore[arg-type]

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The threads that run plain methods: made on first use, shut down by :meth:`aclose`.

        A thread cannot be stopped from outside, and Python waits for the pool's threads when
        it exits: a plain method that never returns keeps the server process from exiting.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.max_workers,
                                            thread_name_prefix="rpc-method")
        return self._pool

    # -- calls running on the whole server (max_server_calls) ----------------------------------

    @property
    def full(self) -> bool:
        """True while ``max_server_calls`` calls are running: no connection takes more."""
        return self.calls_running >= self.config.max_server_calls

    def wait_for_room(self, conn: ServerConnection) -> None:
        """``conn`` stopped reading because the server is full: wake it when there is room."""
        self._waiting_for_room.add(conn)

    def calls_ended(self, count: int = 1) -> None:
        """``count`` calls finished or were cancelled.

        The connections that stopped reading because the server was full read again once a
        quarter of the calls have finished (the low-water mark), not at the first free slot:
        waking them all for one slot would have all but one stop again at once.
        """
        self.calls_running -= count
        limit = self.config.max_server_calls
        if self._waiting_for_room and self.calls_running <= 3 * limit // 4:
            waiting, self._waiting_for_room = self._waiting_for_room, set()
            for conn in waiting:
                conn.wake()

    def _detach(self, conn: v2_0.ServerConnection) -> None:
        super()._detach(conn)
        self._waiting_for_room.discard(conn)

    async def aclose(self, grace: float | None = None) -> None:
        """Shut down gracefully: stop accepting, GOAWAY, finish calls in flight, close.

        After the GOAWAY the server waits, within the grace, both for its calls in flight and
        for each client to close its connection. A client closes a connection that said GOAWAY
        once its own pending calls are answered; until then a request it sent before it read
        the GOAWAY still finds the connection open, and is refused without being run (so the
        client may send it elsewhere), instead of being lost with a closed socket.

        Args:
            grace: seconds to wait; ``config.shutdown_grace`` when None. Calls still running
                after it are cancelled (a thread-pool call that has started runs on to its end,
                unheard), and connections still open are closed.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = self.connections
        for conn in connections:
            conn.go_away(GoAway.SHUTDOWN)
        waiting = [call for conn in connections for call in conn.running.values()]
        waiting += [conn.lost for conn in connections if not conn.lost.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.shutdown_grace if grace is None else grace)
        for conn in connections:
            conn.close()
        # Return only once every connection has been released (connection_lost has run).
        lost = [conn.lost for conn in connections if not conn.lost.done()]
        if lost:
            await asyncio.wait(lost, timeout=1.0)
        for conn in connections:
            if not conn.lost.done():
                conn.abort()
        if self._pool is not None:
            # Queued calls are dropped; running ones cannot be stopped, and are not waited for.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        await server.wait_closed()


class ServerConnection(BatchedWriter, OwnBufferReader, asyncio.BufferedProtocol):
    """One client's long-lived connection: frames in, calls run, answers out in any order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = config = server.config
        self.codec = FrameCodec(max_frame_size=config.max_frame_size)
        self.transport: asyncio.Transport | None = None
        #: Calls running now, by request id: tasks and thread-pool calls.
        self.running: dict[int, asyncio.Future[Any]] = {}
        self.going_away = False
        self._loop = asyncio.get_running_loop()
        self._heartbeat = Heartbeat(None, config.idle_timeout, self._loop.time())
        self._timer: asyncio.TimerHandle | None = None
        # Why we may have stopped reading: too many calls running, here or on the whole server
        # (our own doing), or the client is not reading its answers (its doing).
        self._reading_paused = False
        self._writing_paused = False
        self._partial_since: float | None = None
        self._last_ping = float("-inf")
        self._strikes = 0
        #: Done once the connection is closed and everything held for it released.
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        transport = cast(asyncio.Transport, transport)
        refusal = self.server.refusal(transport.get_extra_info("peername"))
        if refusal is not None:  # max_connections are open already
            transport.write(self.server.encode_answer(self.codec, refusal))
            transport.close()
            return
        self.transport = transport
        self.server._attach(self)  # type: ignore[arg-type]
        self._heartbeat.on_read(self._loop.time())
        self._schedule(self._loop.time() + self.config.idle_timeout)

    def data_received(self, data: bytes) -> None:
        now = self._loop.time()
        self._heartbeat.last_read = now  # inlined on_read(): this runs for every read
        codec = self.codec
        codec.feed(data)
        frame_done = self._process()
        # frame_timeout measures one frame, from the read that brought its first bytes. If this
        # read completed a frame, the bytes left are a frame that started arriving now; if it
        # completed none, the frame arriving keeps its start, so trickling cannot move it.
        # Frames that wait because we stopped reading wait on us, not on the client.
        if not codec.buffered or self._reading_paused or self._writing_paused:
            self._partial_since = None
        elif frame_done or self._partial_since is None:
            self._partial_since = now
            deadline = now + self.config.frame_timeout
            if self._timer is None or self._timer.when() > deadline:
                self._schedule(deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        # Release everything held for this client: its running calls, its timer, its buffers and
        # its entry in the server's tables. A task is cancelled at its next await; a thread-pool
        # call that has not started never will; one that has started cannot be interrupted (no
        # thread can be stopped from outside): it runs to its end, and _call_done drops its
        # result, since the call is no longer in ``running``.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        running, self.running = self.running, {}
        for call in running.values():
            call.cancel()
        self.server.calls_ended(len(running))
        self.transport = None
        self.codec = FrameCodec(max_frame_size=0)
        self.server._detach(self)  # type: ignore[arg-type]
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        """The client does not read its answers fast enough: stop reading its requests too.

        asyncio calls this when the transport's write buffer passes its high-water mark. Until
        the buffer drains, frames already read wait in the codec (``_process`` stops), and TCP
        holds back the rest. Unlike push back for our own calls, this does not suspend the idle
        verdict: a client that reads nothing for ``idle_timeout`` is closed.
        """
        self._writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.transport is not None and not self._reading_paused:
            self._loop.call_soon(self._resume)

    # -- frames ----------------------------------------------------------------------------------

    def _process(self) -> bool:
        """Handle the buffered frames while this connection may take more work.

        It stops, leaving the rest in the codec, when a limit on running calls is reached
        (:meth:`_push_back`) or when the client does not read its answers
        (:meth:`pause_writing`).

        Returns:
            Whether a frame was taken from the codec.
        """
        transport = self.transport
        if transport is None:
            return False
        out: list[bytes] = []
        server = self.server
        codec = self.codec
        running = self.running
        limit = self.config.max_concurrent_calls
        server_limit = self.config.max_server_calls
        chunk = self.FIRST_CHUNK
        frame_done = False
        try:
            while not self._writing_paused:
                if len(running) >= limit or server.calls_running >= server_limit:
                    self._push_back(out)
                    break
                frame = codec.next_frame()
                if frame is NEED_DATA:
                    break
                frame_done = True
                ftype = frame[0]
                if ftype == FrameType.REQUEST:
                    answer = self._on_request(frame)
                    if answer is not None:
                        out.append(server.encode_answer(codec, answer))
                        if len(out) >= chunk:
                            # Send answers as they are made, in growing chunks, so the client
                            # starts on them while this side works on the rest (see writer).
                            transport.write(b"".join(out))
                            out.clear()
                            chunk = self.next_chunk(chunk)
                elif ftype == FrameType.PING:
                    if not self._on_ping(out):
                        return frame_done
                elif ftype != FrameType.PONG:
                    answer = self.on_frame(frame)
                    if answer is not None:
                        out.append(server.encode_answer(codec, answer))
        except FrameTooLargeError as exc:
            self._fail(exc, exc.request_id, out)
        except ProtocolError as exc:
            self._fail(exc, 0, out)
        finally:
            if out and self.transport is not None:
                self.transport.write(b"".join(out))
        return frame_done

    def on_frame(self, frame: Frame) -> Frame | None:
        """A frame of a type v2.1 does not know: a protocol error. (v3.2 adds types here.)"""
        raise RemoteProtocolError(f"unexpected frame type {frame.type} from a client")

    def _push_back(self, out: list[bytes]) -> None:
        """Stop reading: ``max_concurrent_calls`` run on this connection, or
        ``max_server_calls`` on the server. Frames already read wait in the codec."""
        if not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
            out.append(PONG_FRAME)  # we are alive, only busy (see _on_timer)
            self._schedule(self._loop.time() + self.config.min_ping_interval)
        if self.server.full:
            self.server.wait_for_room(self)

    def wake(self) -> None:
        """Room was made for more calls: take the frames that waited, then read again."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self.transport is None:
            return
        self._process()  # frames that waited in the codec first
        if not self._reading_paused and not self._writing_paused:
            self.transport.resume_reading()

    def _on_request(self, frame: Frame) -> Frame | None:
        server = self.server
        rid = frame.request_id
        if rid in self.running:
            # Two calls with one id: an answer could not say which call it belongs to. A client
            # that does this cannot be trusted with the rest of the connection either.
            raise RemoteProtocolError(f"request id {rid} is already in flight on this "
                                      "connection: an id may be reused only once answered")
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
        if server.runs[invocation.address, invocation.method] is Run.THREAD:
            call = partial(target, *invocation.args, **invocation.kwargs)
            self._track(rid, serializer, invocation, self._loop.run_in_executor(server.pool, call))
            return None
        try:
            value = target(*invocation.args, **invocation.kwargs)
        except Exception as exc:
            return server.respond(rid, serializer, invocation, *server.error_outcome(exc))
        if type(value) is CoroutineType:  # an async def method: run it as its own task
            self._track(rid, serializer, invocation, self._loop.create_task(value))
            return None
        return server.respond(rid, serializer, invocation, Status.OK, Outcome(value))

    def _track(self, rid: int, serializer: Serializer, invocation: Invocation,
               call: asyncio.Future[Any]) -> None:
        """Count a call that runs on its own (a task, a thread-pool call); answer it when done."""
        self.running[rid] = call
        self.server.calls_running += 1
        self.server.calls_by_api[invocation.address] += 1
        call.add_done_callback(partial(self._call_done, rid, serializer, invocation))

    def _call_done(self, rid: int, serializer: Serializer, invocation: Invocation,
                   call: asyncio.Future[Any]) -> None:
        # Runs once per call: when its task or thread ends, or, for a lost connection, as soon as
        # connection_lost cancels it (the asyncio future of a started thread-pool call is done at
        # once, while its thread runs on).
        self.server.calls_by_api[invocation.address] -= 1
        if self.running.pop(rid, None) is None:
            return  # the connection is gone: the call was cancelled and counted with it
        self.server.calls_ended()
        if self._reading_paused and len(self.running) < self.config.max_concurrent_calls:
            self.wake()
        if call.cancelled():
            if not isinstance(call, asyncio.Task) or call.cancelling():
                return  # cancelled by this server (a shutdown, v3.2's CANCEL): nobody waits
            # The method's own task ended cancelled (it awaited something that was cancelled):
            # its caller still waits, and gets an error rather than its deadline.
            status, outcome = Status.INTERNAL, Outcome(error=ErrorInfo(
                "status.INTERNAL", f"{invocation.method}() was cancelled on the server before "
                "it finished"))
        elif (exc := call.exception()) is None:
            status, outcome = Status.OK, Outcome(value=call.result())
        elif isinstance(exc, Exception):
            status, outcome = self.server.error_outcome(exc)
        else:  # KeyboardInterrupt, SystemExit: not ours to swallow
            raise exc
        # Answers of calls that finish in the same turn of the loop leave together.
        answer = self.server.respond(rid, serializer, invocation, status, outcome)
        self.write(self.server.encode_answer(self.codec, answer))

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
            # calls finish (here or, past max_server_calls, elsewhere on the server), so this
            # cannot last longer than the calls themselves.
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
        error = self.server.error_frame(request_id, exc.status, str(exc))
        out.append(self.server.encode_answer(self.codec, error))
        assert self.transport is not None
        self.transport.write(b"".join(out))
        out.clear()
        self.close()

    def go_away(self, reason: GoAway) -> None:
        """Tell the client to send no new calls here (it closes the connection when its calls
        are answered; :meth:`Server.aclose` closes what is left after the grace)."""
        if self.transport is None or self.going_away:
            return
        self.going_away = True
        self.transport.write(goaway_frame(reason))

    def close(self) -> None:
        """Close the connection after writing what is buffered."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, buffered bytes and all."""
        if self.transport is not None:
            self.transport.abort()
