"""The v2.1 client: one long-lived connection, many calls in flight, a heartbeat, reconnection.

v2.0's client opened a TCP connection for every call: a handshake, a request, an answer, a
teardown. Inside a data centre, where one service calls another thousands of times a second, the
handshakes cost more than the calls. v2.1 keeps one connection per server open and sends every
call over it, without waiting for the previous answer:

* each call gets a request id; its future waits in ``pending[request_id]``; the answer, whenever
  it comes and in whatever order, completes the future with that id (*multiplexing*);
* each call has a deadline (``config.timeout``, per proxy, or per call with :func:`rpc_timeout`).
  At the deadline the caller gets :class:`RpcTimeoutError` at once; if the answer comes later its
  id is no longer pending and it is dropped;
* the connection's :class:`~stages.v2_1.heartbeat.Heartbeat` pings a silent server and closes
  the connection when the server stays silent for ``idle_timeout``; every pending call then fails
  at once with :class:`ConnectionClosedError`: nothing hangs;
* a call that finds no usable connection opens one. After a failed attempt the next waits an
  exponentially growing, jittered delay; calls made meanwhile fail fast;
* a server's GOAWAY marks its connection as draining: pending calls finish on it, new calls go
  to a new connection.

Everything above the connection is v2.0's: proxies, arguments checked locally, serializers,
exceptions. :meth:`Client.exchange` (send a frame, get its answer) is replaced, and the client is
cut in two so that later versions can build on it:

* an :class:`Endpoint` holds what belongs to one server: its connection and the backoff that
  paces reconnecting (v3.x holds one per provider);
* every call, from a blocking or an async proxy, takes one route, :meth:`Client.invoke`, through
  a chain of :class:`Interceptor` hooks (v3.x puts its balancer, breaker and metrics there).
  Where that chain is empty, a blocking proxy's call takes a faster route of its own, in the
  calling thread (:mod:`stages.v2_1.blocking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from stages.v2_0 import client as v2_0
from stages.v2_0.api import ApiSpec, MethodSpec
from stages.v2_0.errors import (
    ConfigError,
    ConnectionClosedError,
    ProtocolError,
    RemoteProtocolError,
    RpcTimeoutError,
    TransportError,
)
from stages.v2_0.serializers import Serializer
from stages.v2_1 import fastpath
from stages.v2_1.blocking import DirectConnection, DirectPool
from stages.v2_1.config import ClientConfig
from stages.v2_1.heartbeat import Action, Heartbeat
from stages.v2_1.protocol import (
    NEED_DATA,
    PING_FRAME,
    PONG_FRAME,
    Frame,
    FrameCodec,
    FrameType,
    GoAway,
    goaway_reason,
)
from stages.v2_1.reader import OwnBufferReader
from stages.v2_1.writer import BatchedWriter

if TYPE_CHECKING:
    from typing_extensions import TypeForm  # not type[T]: see stages.v2_0.client

__all__ = ["Client", "ClientConnection", "rpc_timeout", "check_timeout"]

log = logging.getLogger(__name__)
T = TypeVar("T")


_call_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "rpc_call_timeout", default=None)


@contextlib.contextmanager
def rpc_timeout(seconds: float) -> Iterator[None]:
    """Give the calls made inside the block their own timeout::

        with rpc_timeout(0.2):
            user_api.get_user(1)   # RpcTimeoutError after 200 ms

    Raises:
        ConfigError: ``seconds`` is not a number > 0.
    """
    token = _call_timeout.set(check_timeout(seconds, "rpc_timeout"))
    try:
        yield
    finally:
        _call_timeout.reset(token)


def check_timeout(seconds: object, what: str) -> float:
    """``seconds`` as a float, if it is a finite number > 0.

    A timeout becomes an event loop timer. NaN compares false with everything, so one NaN
    deadline breaks the order of the loop's timer heap, and with it every other timer of the
    loop: other calls' deadlines and the heartbeat. Infinity never fires. Both are refused.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} needs a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


class ClientConnection(BatchedWriter, OwnBufferReader, asyncio.BufferedProtocol):
    """One long-lived connection to a server, shared by every call to it.

    Args:
        address: the server's address, for messages.
        config: frame limit and heartbeat settings.
        heartbeat_interval: the interval in force (the client may have backed it off).
    """

    def __init__(self, address: tuple[str, int], config: ClientConfig,
                 heartbeat_interval: float) -> None:
        self.address = address
        self.where = f"{address[0]}:{address[1]}"
        self.codec = FrameCodec(max_frame_size=config.max_frame_size)
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        # Deadlines of pending calls, earliest first: (deadline, request id, timeout). One timer
        # serves them all (see _arm_deadline); entries of answered calls are skipped when they
        # come up, and the heap is rebuilt if it grows much larger than ``pending``.
        self._deadlines: list[tuple[float, int, float]] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._next_expiry = math.inf  # when the deadline timer fires (inf: it is not armed)
        self.transport: asyncio.Transport | None = None
        self.goaway: GoAway | None = None
        self.late_answers = 0
        self._loop = asyncio.get_running_loop()
        scale = heartbeat_interval / config.heartbeat_interval
        self._heartbeat = Heartbeat(heartbeat_interval, config.idle * scale, self._loop.time())
        self._timer: asyncio.TimerHandle | None = None
        self._close_reason: ConnectionClosedError | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    @property
    def usable(self) -> bool:
        """Open, and not told by the server to go away."""
        return self.transport is not None and self.goaway is None and not self.transport.is_closing()

    # -- sending ---------------------------------------------------------------------------------

    def request(self, frame: Frame, timeout: float) -> asyncio.Future[Frame]:
        """Encode and send a REQUEST frame (see :meth:`send`).

        Raises:
            LocalProtocolError: the frame is larger than this side sends (nothing is sent).
        """
        return self.send(frame.request_id, self.codec.encode(frame), timeout)

    def send(self, request_id: int, data: bytes, timeout: float) -> asyncio.Future[Frame]:
        """Send an encoded request; the returned future gets its RESPONSE frame, or
        :class:`RpcTimeoutError` after ``timeout`` seconds."""
        # A lone call goes out at once; with others in flight, requests made in the same turn
        # of the loop leave together (see BatchedWriter). The bookkeeping below can wait until
        # the request is on its way: its answer cannot be read before we return to the loop.
        pending = self.pending
        self.write(data, now=not pending)
        loop = self._loop
        future = loop.create_future()
        pending[request_id] = future
        deadline = loop.time() + timeout
        deadlines = self._deadlines
        heapq.heappush(deadlines, (deadline, request_id, timeout))
        if deadline < self._next_expiry:
            self._arm_deadline(deadline)
        elif len(deadlines) > 2 * len(pending) + 1024:
            self._deadlines = [entry for entry in deadlines if entry[1] in pending]
            heapq.heapify(self._deadlines)
        return future

    def forget(self, request_id: int) -> None:
        """The caller stopped waiting (its task was cancelled): forget the call now rather than
        at its deadline, so that cancelled calls hold no memory. Its answer, if one comes, is
        dropped like a late one; after GOAWAY, it was perhaps the last call owed."""
        if self.pending.pop(request_id, None) is not None and self.goaway is not None \
                and not self.pending:
            self.close(ConnectionClosedError(f"{self.where} went away ({self.goaway.value})"))

    def _arm_deadline(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = self._loop.call_at(when, self._expire_deadlines)
        self._next_expiry = when

    def _expire_deadlines(self) -> None:
        self._deadline_timer = None
        self._next_expiry = math.inf
        now = self._loop.time()
        deadlines, pending = self._deadlines, self.pending
        while deadlines and deadlines[0][0] <= now:
            _, rid, timeout = heapq.heappop(deadlines)
            future = pending.pop(rid, None)
            if future is not None and not future.done():
                future.set_exception(RpcTimeoutError(
                    f"no answer from {self.where} within {timeout:.3g} s"))
        while deadlines and deadlines[0][1] not in pending:
            heapq.heappop(deadlines)  # answered already
        if deadlines:
            self._arm_deadline(deadlines[0][0])
        if self.goaway is not None and not pending:
            self.close(ConnectionClosedError(f"{self.where} went away ({self.goaway.value})"))

    # -- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        now = self._loop.time()
        self._heartbeat.on_read(now)
        self._on_timer()

    def data_received(self, data: bytes) -> None:
        self._heartbeat.last_read = self._loop.time()  # any byte is a sign of life
        codec = self.codec
        codec.feed(data)
        pending = self.pending
        try:
            while (frame := codec.next_frame()) is not NEED_DATA:
                ftype = frame[0]
                if ftype == FrameType.RESPONSE:
                    future = pending.pop(frame[1], None)
                    if future is None or future.done():
                        self.late_answers += 1  # its call timed out already: drop it
                    else:
                        future.set_result(frame)
                    if self.goaway is not None and not pending:  # the last call it owed us
                        self.close(ConnectionClosedError(
                            f"{self.where} went away ({self.goaway.value})"))
                elif ftype == FrameType.PONG:
                    pass
                elif ftype == FrameType.PING:
                    self.write(PONG_FRAME)
                elif ftype == FrameType.GOAWAY:
                    self._on_goaway(frame)
                else:
                    raise RemoteProtocolError(f"unexpected frame type {ftype} from server")
        except ProtocolError as exc:
            self.abort(ConnectionClosedError(f"protocol error from {self.where}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._deadline_timer = None
        self._next_expiry = math.inf
        self._deadlines = []
        self.transport = None
        reason = self._close_reason or ConnectionClosedError(
            f"connection to {self.where} lost" + (f": {exc}" if exc else " (closed by server)"))
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_copy(reason))
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_goaway(self, frame: Frame) -> None:
        self.goaway = goaway_reason(frame)
        log.info("%s sent GOAWAY %s", self.where, self.goaway.value)
        if not self.pending:
            self.close(ConnectionClosedError(f"{self.where} went away ({self.goaway.value})"))

    # -- heartbeat and closing -------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        action, next_poll = self._heartbeat.poll(self._loop.time())
        if action is Action.PING:
            self.write(PING_FRAME, now=True)
        elif action is Action.CLOSE:
            self.abort(ConnectionClosedError(
                f"{self.where} sent nothing for {self._heartbeat.idle_timeout:.3g} s (heartbeat "
                "idle timeout): connection closed as dead"))
            return
        self._timer = self._loop.call_at(next_poll, self._on_timer)

    def close(self, reason: ConnectionClosedError | None = None) -> None:
        """Close after sending what is buffered; pending calls fail with ``reason``."""
        if self.transport is not None:
            self._close_reason = self._close_reason or reason or ConnectionClosedError(
                f"connection to {self.where} closed by the client", closed_by_peer=False)
            self.flush()
            self.transport.close()

    def abort(self, reason: ConnectionClosedError) -> None:
        """Drop the connection now (a dead or misbehaving peer): nothing more is sent."""
        if self.transport is not None:
            self._close_reason = self._close_reason or reason
            self.transport.abort()


def _copy(exc: ConnectionClosedError) -> ConnectionClosedError:
    # Each failed call gets its own exception object: one raised object shared by many
    # awaiting tasks would collect all their tracebacks.
    return ConnectionClosedError(str(exc), closed_by_peer=exc.closed_by_peer)


class Endpoint:
    """One server as a client sees it: its one connection, and the backoff that paces reconnecting.

    A v2.1 client talks to one server and holds one endpoint; a client of v3.x, which spreads
    calls over many providers, holds one per provider. Everything that belongs to one server
    lives here: the connection, how many were opened, the delay before the next attempt after a
    failed one, and the heartbeat interval in force (doubled when the server said we ping too
    often).

    Args:
        address: the server's ``(host, port)``.
        config: connection, heartbeat and backoff settings.
        ssl: connect with TLS, checked by this context (v3.3).
        hello: a frame sent first on every new connection, before any call (v3.3: the token).
    """

    def __init__(self, address: tuple[str, int], config: ClientConfig, *,
                 ssl: SSLContext | None = None, hello: Frame | None = None) -> None:
        self.address = address
        self.config = config
        self.ssl = ssl
        self.hello = hello
        self.where = f"{address[0]}:{address[1]}"
        self.connection: ClientConnection | None = None
        #: Connections opened so far (a reconnect adds one).
        self.connects = 0
        self.heartbeat_interval = config.heartbeat_interval
        self._connecting: asyncio.Task[ClientConnection] | None = None
        self._delay = config.backoff_initial
        self._next_attempt = 0.0
        self._last_error: BaseException | None = None

    @property
    def last_error(self) -> BaseException | None:
        """Why the last connection attempt failed (None: it did not, or none was made)."""
        return self._last_error

    @property
    def usable(self) -> bool:
        """Connected, and the server has not said GOAWAY."""
        return self.connection is not None and self.connection.usable

    def accepting(self, now: float) -> bool:
        """Whether a call sent at loop time ``now`` may go out: the server has not said GOAWAY
        on the open connection, and no backoff after a failed connection attempt is running."""
        conn = self.connection
        if conn is not None and conn.transport is not None and conn.goaway is not None:
            return False
        return now >= self._next_attempt

    async def exchange(self, request: Frame, timeout: float) -> Frame:
        """Send a request on this server's connection (opening one if needed) and wait for its
        answer.

        Raises:
            RpcTimeoutError: no answer within ``timeout`` (the answer, if it comes, is dropped).
            ConnectionClosedError: the connection closed or was found dead while waiting.
            TransportError: no connection could be opened (or the backoff is still running).
        """
        conn = self.connection
        if conn is None or not conn.usable:
            conn = await self.connect()
        answer = conn.request(request, timeout)
        try:
            return await answer
        except asyncio.CancelledError:
            conn.forget(request.request_id)
            raise

    async def connect(self) -> ClientConnection:
        """A usable connection: the one being opened, or a new one if the backoff allows."""
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            wait = self._next_attempt - loop.time()
            if wait > 0:
                raise TransportError(
                    f"{self.where} unavailable (last error: {self._last_error}); next "
                    f"connection attempt in {wait:.3g} s")
            self._connecting = loop.create_task(self._open())
        # Every call waiting for this attempt shares it; shield it from their cancellation.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            old = self.connection
            if old is not None and old.transport is not None and not old.pending:
                old.close()
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    _, conn = await loop.create_connection(
                        lambda: ClientConnection(self.address, self.config,
                                                 self.heartbeat_interval),
                        *self.address, ssl=self.ssl)
            except (OSError, TimeoutError) as exc:
                self._last_error = exc if not isinstance(exc, TimeoutError) else TimeoutError(
                    f"connect timed out after {self.config.connect_timeout} s")
                jitter = 1 + self.config.backoff_jitter * (2 * random.random() - 1)
                self._next_attempt = loop.time() + self._delay * jitter
                self._delay = min(self._delay * self.config.backoff_multiplier,
                                  self.config.backoff_max)
                raise TransportError(f"cannot connect to {self.where}: "
                                     f"{self._last_error}") from exc
            self._delay = self.config.backoff_initial
            self._next_attempt = 0.0
            self._last_error = None
            if self.hello is not None:
                conn.write(conn.codec.encode(self.hello))
            self.connection = conn
            self.connects += 1
            conn.closed.add_done_callback(lambda _: self._on_closed(conn))
            return conn
        finally:
            self._connecting = None

    def _on_closed(self, conn: ClientConnection) -> None:
        if conn.goaway is GoAway.TOO_MANY_PINGS:
            # The server finds us too chatty: ping half as often from now on (gRPC does the same).
            self.heartbeat_interval *= 2
            log.warning("%s: too many pings; heartbeat interval raised to %.3g s",
                        self.where, self.heartbeat_interval)

    async def aclose(self) -> None:
        """Close the connection (on the loop it belongs to); its pending calls fail."""
        conn, self.connection = self.connection, None
        if conn is not None and conn.transport is not None:
            conn.close()
            await conn.closed


@dataclass(frozen=True)
class Call:
    """One call on its way, as interceptors see it.

    Attributes:
        spec: the interface's spec (its address is ``spec.address``).
        method: the method's name.
        args, kwargs: the arguments, already checked against the interface.
        serializer: the serializer the call travels in.
        timeout: seconds the caller waits for the answer.
    """

    spec: ApiSpec
    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    serializer: Serializer
    timeout: float


#: What an interceptor calls to let the call go on: the next interceptor, or the call itself.
Proceed = Callable[[Call], Awaitable[Any]]


class Interceptor(Protocol):
    """A hook around every call a client makes, as gRPC's interceptors and Dubbo's filters.

    An interceptor is called with the :class:`Call` and ``proceed``; it may look at the call,
    change it (``dataclasses.replace``), time it, retry it or refuse it, and returns the call's
    value (or raises). Interceptors run in the order given to the client, the first outermost::

        class Timing:
            async def __call__(self, call: Call, proceed: Proceed) -> Any:
                start = time.perf_counter()
                try:
                    return await proceed(call)
                finally:
                    print(call.method, time.perf_counter() - start)

        client = Client(host, port, interceptors=[Timing()])

    Every call goes through them, from blocking and async proxies alike: this is where v3.x
    puts its balancer, circuit breaker and metrics without touching the rest of the client.
    """

    def __call__(self, call: Call, proceed: Proceed) -> Awaitable[Any]: ...


class Client(v2_0.Client):
    """Calls a v2.1 server over one long-lived, multiplexed connection.

    The API is v2.0's (``proxy``, ``async_proxy``, ``close``), plus ``timeout=`` on the proxies,
    :meth:`aclose` for asyncio code, and ``interceptors``. Every call, from a blocking or an async
    proxy, takes one route: :meth:`invoke`, then the interceptors, then :meth:`exchange` on the
    server's :class:`Endpoint`; a blocking proxy's call on a client without interceptors takes a
    faster one, in the calling thread (:mod:`stages.v2_1.blocking`). A client serves one event
    loop: its blocking proxies use its own loop thread, so use either blocking proxies or async
    proxies with one client.

    Args:
        host, port: the server's address.
        config: timeouts, heartbeat, backoff and the default serializer.
        interceptors: hooks around every call (see :class:`Interceptor`), outermost first.
    """

    config: ClientConfig

    def __init__(self, host: str, port: int, config: ClientConfig | None = None, *,
                 interceptors: Iterable[Interceptor] = ()) -> None:
        super().__init__(host, port, config or ClientConfig())
        self.endpoint = Endpoint(self.address, self.config)
        self.interceptors = tuple(interceptors)
        self._proceed = self._chain()
        #: The connections blocking proxies' calls own while they wait (see blocking).
        self.direct = DirectPool(self._direct_connection, self.config.direct_connections)
        self._direct_after = 0.0  # monotonic time before which no direct connection is tried

    def add_interceptor(self, interceptor: Interceptor) -> None:
        """Put ``interceptor`` around every later call, outside those already there."""
        self.interceptors = (interceptor, *self.interceptors)
        self._proceed = self._chain()

    def _chain(self) -> Proceed:
        proceed: Proceed = self._send
        for interceptor in reversed(self.interceptors):
            proceed = functools.partial(interceptor, proceed=proceed)
        return proceed

    @property
    def connection(self) -> ClientConnection | None:
        """The server's connection, if one is open (see :class:`Endpoint`)."""
        return self.endpoint.connection

    @property
    def connects(self) -> int:
        """Connections opened so far."""
        return self.endpoint.connects

    # -- proxies: v2.0's, with a per-proxy and a per-call timeout --------------------------------

    def proxy(self, interface: TypeForm[T], *, serializer: str | None = None,
              timeout: float | None = None) -> T:
        """A blocking proxy (see v2.0); ``timeout`` overrides ``config.timeout`` for its calls."""
        if timeout is not None:
            timeout = check_timeout(timeout, "proxy(timeout=...)")
        spec, ser = self._prepare(interface, serializer)

        def call(method: MethodSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # The per-call timeout is read here, in the caller's thread and context.
            return self._blocking_call(spec, method.name, args, kwargs, ser,
                                       _call_timeout.get() or timeout)

        return cast(T, v2_0.make_proxy_class(spec, asynchronous=False)(call, self._target()))

    def async_proxy(self, interface: type, *, serializer: str | None = None,
                    timeout: float | None = None) -> Any:
        """An async proxy (see v2.0); ``timeout`` overrides ``config.timeout`` for its calls."""
        if timeout is not None:
            timeout = check_timeout(timeout, "async_proxy(timeout=...)")
        spec, ser = self._prepare(interface, serializer)

        def call(method: MethodSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return self.invoke(spec, method.name, args, kwargs, ser, _call_timeout.get() or timeout)

        return v2_0.make_proxy_class(spec, asynchronous=True)(call, self._target())

    def _blocking_call(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                       kwargs: dict[str, Any], serializer: Serializer,
                       timeout: float | None) -> Any:
        """A blocking proxy's call: in this thread on a connection of its own where it can
        (see :mod:`stages.v2_1.blocking`), else on the client's loop thread, on the same route
        as an async call."""
        if self._direct_route():
            request = self.request_frame(spec, method, args, kwargs, serializer)
            answer = self._call_direct(request, self._timeout(timeout))
            if answer is not None:
                return self.read_outcome(answer, serializer)
        return self._loop().run(self.invoke(spec, method, args, kwargs, serializer, timeout))

    def _direct_route(self) -> bool:
        """Whether a blocking call may run in its own thread: nothing of the call needs the
        loop (no interceptor, no TLS, no first frame), and this is not the loop's own thread."""
        return (not self.interceptors and self.endpoint.ssl is None
                and self.endpoint.hello is None and time.monotonic() >= self._direct_after
                and not self._on_loop_thread())

    def _on_loop_thread(self) -> bool:
        loop_thread = self._loop_thread
        return loop_thread is not None and threading.current_thread() is loop_thread.thread

    def _direct_connection(self) -> DirectConnection:
        config = self.config
        return DirectConnection(self.address, config.max_frame_size, config.connect_timeout,
                                config.heartbeat_interval, config.idle)

    def _call_direct(self, request: Frame, timeout: float) -> Frame | None:
        """Make a call on a connection this thread owns meanwhile; None if none is free (or
        none could be opened: the hand-over route then reports it, and backs off)."""
        try:
            conn = self.direct.borrow()
        except OSError:
            self._direct_after = time.monotonic() + self.config.backoff_max
            return None
        if conn is None:
            return None
        try:
            return conn.call(request, timeout)
        finally:
            self.direct.give_back(conn)

    def _prepare(self, interface: object, serializer: str | None) -> tuple[ApiSpec, Serializer]:
        # v2.0's spec and serializer, with the hot path's quicker argument check and records.
        spec, ser = super()._prepare(interface, serializer)
        if not self.config.fastpath:
            return spec, ser
        return fastpath.quick_spec(spec), fastpath.faster(ser)

    def _timeout(self, timeout: float | None) -> float:
        return self.config.timeout if timeout is None else check_timeout(timeout, "timeout")

    def _target(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    # -- one call: the route every proxy takes ---------------------------------------------------

    async def invoke(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], serializer: Serializer,
                     timeout: float | None = None) -> Any:
        """Send one call through the interceptors and return its value (see v2.0's
        :meth:`~stages.v2_0.client.Client.invoke` for what it raises)."""
        call = Call(spec, method, args, kwargs, serializer, self._timeout(timeout))
        return await self._proceed(call)

    async def _send(self, call: Call) -> Any:
        """The end of the interceptor chain: encode, exchange on the server's endpoint, decode."""
        request = self.request_frame(call.spec, call.method, call.args, dict(call.kwargs),
                                     call.serializer)
        return self.read_outcome(await self.endpoint.exchange(request, call.timeout),
                                 call.serializer)

    async def exchange(self, request: Frame, timeout: float | None = None) -> Frame:
        """Send a request on the shared connection and wait for its answer (the one method of
        v2.0's client that v2.1 replaces; see :meth:`Endpoint.exchange`)."""
        return await self.endpoint.exchange(request, self._timeout(timeout))

    # -- life cycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (on the loop it belongs to); pending calls fail."""
        await self.endpoint.aclose()

    def close(self) -> None:
        """Close the connections and stop the blocking proxies' loop thread."""
        self.direct.close()
        loop_thread = self._loop_thread
        if loop_thread is not None:
            loop_thread.run(self.aclose())
        super().close()
