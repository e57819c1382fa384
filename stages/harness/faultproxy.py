"""A TCP proxy on loopback that degrades a link on command: dead and slow peers without root.

Tests and notebooks put a :class:`FaultProxy` between a client and a server and then, while
calls are in flight, make the link slow, silent or broken, the way toxiproxy's "toxics" do
(https://github.com/Shopify/toxiproxy). Everything is userspace asyncio on 127.0.0.1, so it runs
unprivileged on a laptop and in CI (RELIABILITY.md, section 6; scenario D5 "Slow links")::

    client ──► proxy.address ──► FaultProxy ──► upstream (the real server)
               "upstream" direction = client → server, "downstream" = server → client

What it can do, per direction unless noted:

=====================  =========================================================================
``set_latency(s)``     every chunk is forwarded ``s`` seconds after it arrived; order is kept and
                       chunks are pipelined (a 0.1 s delay does not cap throughput at 10 chunks/s)
``set_bandwidth(bps)`` chunks are paced out at ``bps`` bytes per second
``blackhole()``        bytes are read and thrown away: the peer stays alive at the TCP level
                       (its writes succeed, nothing backs up) but is silent at the app level
``drop()``             ``blackhole("both")``: the unprivileged stand-in for an iptables DROP
``heal()``             no faults; swallowed bytes are *not* replayed
``cut()``              every live link is closed cleanly: FIN to both ends (both read EOF)
``reset()``            every live link is aborted: RST to both ends (``ConnectionResetError``)
``refuse_new()``       new connections are accepted, then closed at once (the client reads EOF)
=====================  =========================================================================

Faults are one frozen :class:`Faults` value that each change replaces; every link reads it at
each chunk, so a change applies to live links at once and to every later link.

:class:`FaultProxyThread` runs a proxy on its own event loop in a daemon thread, for blocking
code (plain ``socket`` clients, notebooks that are not async).

Limits worth knowing:

* a black-holed EOF is held, not swallowed: it is forwarded when the blackhole is lifted (TCP
  would keep retransmitting the FIN), so a link cannot end half-closed by accident;
* black-holed links still open their upstream connection: the server sees a new connection
  that never speaks, where a real DROP would leave its SYN unanswered;
* ``cut`` on Linux sends RST instead of FIN on a socket whose kernel receive queue still holds
  bytes we have not read; the proxy reads continuously, so this only happens when it is itself
  being back-pressured.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import socket
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Self, TypeVar, get_args

from stages.harness.lifecycle import AsyncService, Service

__all__ = [
    "PACING_INTERVAL",
    "Direction",
    "DirectionStats",
    "FaultProxy",
    "FaultProxyThread",
    "Faults",
    "LinkFaults",
    "ProxyStats",
]

_log = logging.getLogger(__name__)

Direction = Literal["upstream", "downstream"]
"""``"upstream"`` is client → server, ``"downstream"`` is server → client."""

DirectionArg = Literal["upstream", "downstream", "both"]

_DIRECTIONS: Final[tuple[Direction, ...]] = get_args(Direction)

READ_CHUNK: Final = 64 * 1024
"""Largest chunk read from a socket at once; one chunk is one unit of latency."""

BUFFER_LIMIT: Final = 1024 * 1024
"""Bytes a direction may hold in its delay queue before it stops reading its source.

Why a limit: without it a slow receiver would be hidden from the sender, whose writes would
keep succeeding into our memory. With it, back-pressure reaches the sender as it would on a
real link (the limit plays the role of the TCP window)."""

PACING_INTERVAL: Final = 0.05
"""Under a bandwidth limit, data leaves in slices of at most this many seconds' worth."""

CLOSE_GRACE: Final = 2.0
"""Seconds a clean close may spend flushing to a peer that does not read, before we abort."""

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Fault settings and statistics: immutable values, swapped whole.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LinkFaults:
    """The faults applied to one direction of every link.

    Args:
        latency: Seconds added to every chunk, counted from its arrival at the proxy.
        bandwidth: Bytes per second, or ``None`` for no limit.
        blackhole: Read and discard everything instead of forwarding it.

    Raises:
        ValueError: If ``latency`` is negative or not finite, or ``bandwidth`` is not positive.
    """

    latency: float = 0.0
    bandwidth: int | None = None
    blackhole: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a finite number >= 0, got {self.latency!r}")
        if self.bandwidth is not None and (
            isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, int)
            or self.bandwidth <= 0
        ):
            raise ValueError(f"bandwidth must be a positive int or None, got {self.bandwidth!r}")


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Every fault of a proxy at one moment.

    Args:
        upstream: Faults on the client → server direction.
        downstream: Faults on the server → client direction.
        refuse_new: Close new connections as soon as they are accepted.
    """

    upstream: LinkFaults = field(default_factory=LinkFaults)
    downstream: LinkFaults = field(default_factory=LinkFaults)
    refuse_new: bool = False

    def of(self, direction: Direction) -> LinkFaults:
        """Return the faults of one direction.

        Args:
            direction: ``"upstream"`` or ``"downstream"``.

        Returns:
            That direction's :class:`LinkFaults`.
        """
        return self.upstream if direction == "upstream" else self.downstream


@dataclass(frozen=True)
class DirectionStats:
    """Byte counts for one direction, summed over every link the proxy has carried.

    ``received == forwarded + swallowed + (bytes still queued in live links)``.

    Args:
        received: Bytes read from the sending side.
        forwarded: Bytes handed to the receiving side's socket.
        swallowed: Bytes that will never be forwarded: discarded by a blackhole, or still
            queued when their link was cut, reset or closed.
    """

    received: int = 0
    forwarded: int = 0
    swallowed: int = 0


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a proxy's counters.

    Args:
        upstream: Client → server bytes.
        downstream: Server → client bytes.
        accepted: Client connections accepted and proxied (refused ones excluded).
        refused: Client connections closed at once because of ``refuse_new``.
        upstream_failures: Client connections closed because the upstream could not be reached.
    """

    upstream: DirectionStats
    downstream: DirectionStats
    accepted: int
    refused: int
    upstream_failures: int

    def of(self, direction: Direction) -> DirectionStats:
        """Return one direction's counters.

        Args:
            direction: ``"upstream"`` or ``"downstream"``.

        Returns:
            That direction's :class:`DirectionStats`.
        """
        return self.upstream if direction == "upstream" else self.downstream


@dataclass(slots=True)
class _Counters:
    # Mutable on purpose: a pipe adds to these for every chunk, and `stats` snapshots them.
    received: int = 0
    forwarded: int = 0
    swallowed: int = 0


def _directions(direction: str) -> tuple[Direction, ...]:
    """Expand a direction argument; validate it so a typo fails loudly, not silently."""
    if direction == "both":
        return _DIRECTIONS
    if direction in _DIRECTIONS:
        return (direction,)
    raise ValueError(f"direction must be 'upstream', 'downstream' or 'both', got {direction!r}")


# --------------------------------------------------------------------------------------------
# The moving parts: a broadcast signal, one direction of a link, one link.
# --------------------------------------------------------------------------------------------


class _Signal:
    """A "something changed" broadcast: every current waiter wakes at the next :meth:`notify`.

    Why not a bare :class:`asyncio.Event`: waiters re-check their own condition after waking,
    and a fresh event per round means nobody needs to clear it (and nobody misses a wake-up by
    racing a ``clear()``).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake everybody waiting now; later waiters wait for the next notify."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        """Wait for the next :meth:`notify`."""
        await self._event.wait()

    async def wait_until(self, deadline: float) -> None:
        """Wait for the next :meth:`notify` or for the loop clock to reach ``deadline``."""
        with suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._event.wait()


class _Pipe:
    """One direction of one link: a reader task and a pump task joined by a delay queue.

    The reader stamps each chunk with its arrival time and queues it; the pump forwards the
    head of the queue once ``arrival + latency`` has passed. So order is kept, and N chunks
    that arrive together leave together after one delay, not N delays.

    Args:
        direction: Which way the bytes flow, for the faults and the counters.
        source: Where bytes come from.
        sink: Where bytes go.
        faults: Returns the faults in force now (read at every decision, so changes apply at
            once).
        counters: The proxy's counters for this direction.
    """

    def __init__(
        self,
        direction: Direction,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        faults: Callable[[], LinkFaults],
        counters: _Counters,
    ) -> None:
        self.direction: Direction = direction
        self._source = source
        self._sink = sink
        self._faults = faults
        self._counters = counters
        self._clock = asyncio.get_running_loop().time
        # (arrival time, chunk); ``None`` marks the source's EOF.
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._queued_bytes = 0
        self._next_send = 0.0  # bandwidth pacing: when the next slice may leave
        self._arrived = _Signal()  # reader -> pump: the queue is no longer empty
        self._drained = _Signal()  # pump -> reader: room in the queue (or faults changed)
        self._retimed = _Signal()  # proxy -> pump: faults changed, re-check the deadline

    def faults_changed(self) -> None:
        """Make both tasks re-read the faults now rather than at their next deadline."""
        self._drained.notify()
        self._retimed.notify()

    def discard_pending(self) -> None:
        """Count whatever is still queued as swallowed; called when the link is torn down."""
        self._counters.swallowed += self._queued_bytes
        self._queued_bytes = 0
        self._queue.clear()

    async def read_loop(self) -> None:
        """Read the source until EOF, queueing or (black-holed) discarding every chunk.

        Raises:
            OSError: If reading fails (e.g. the peer reset the connection).
        """
        while True:
            # Back-pressure, except under a blackhole: a black-holed direction must keep
            # reading, or the sender's buffers would fill and give the blackhole away.
            while self._queued_bytes >= BUFFER_LIMIT and not self._faults().blackhole:
                await self._drained.wait()
            data = await self._source.read(READ_CHUNK)
            now = self._clock()
            if not data:
                self._queue.append((now, None))
                self._arrived.notify()
                return
            self._counters.received += len(data)
            if self._faults().blackhole:
                self._counters.swallowed += len(data)
                continue
            self._queue.append((now, data))
            self._queued_bytes += len(data)
            self._arrived.notify()

    async def pump(self) -> None:
        """Forward queued chunks when they are due, then forward the EOF.

        Raises:
            OSError: If writing fails (e.g. the receiver went away).
        """
        while True:
            if not self._queue:
                await self._arrived.wait()
                continue
            arrival, data = self._queue[0]
            faults = self._faults()
            if faults.blackhole:
                if data is None:
                    # Hold the EOF until heal(): dropping it would leave the link half-open
                    # forever, and TCP itself would keep retransmitting the FIN.
                    await self._retimed.wait()
                else:
                    self._pop()
                    self._counters.swallowed += len(data)
                continue
            due = arrival + faults.latency
            if self._clock() < due:
                # Re-check on a fault change: heal() must release delayed chunks at once.
                await self._retimed.wait_until(due)
                continue
            self._pop()
            if data is None:
                if self._sink.can_write_eof():
                    self._sink.write_eof()  # half-close: the other direction may go on
                return
            await self._send(data)

    def _pop(self) -> None:
        _, data = self._queue.popleft()
        if data is not None:
            self._queued_bytes -= len(data)
            self._drained.notify()

    async def _send(self, data: bytes) -> None:
        """Write one chunk, pacing it under a bandwidth limit; stop if a blackhole starts."""
        while data:
            faults = self._faults()
            if faults.blackhole:
                self._counters.swallowed += len(data)
                return
            if faults.bandwidth is None:
                piece, data = data, b""
            else:
                now = self._clock()
                if now < self._next_send:
                    await self._retimed.wait_until(self._next_send)
                    continue
                size = max(1, int(faults.bandwidth * PACING_INTERVAL))
                piece, data = data[:size], data[size:]
                # No credit for idle time: the rate never exceeds the limit, even in bursts.
                self._next_send = now + len(piece) / faults.bandwidth
            self._sink.write(piece)
            self._counters.forwarded += len(piece)
            await self._sink.drain()


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client side, the upstream side once connected, two pipes."""

    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter | None = None
    pipes: tuple[_Pipe, ...] = ()
    # How teardown closes the sockets: "fin" (close) or "rst" (SO_LINGER 0 + abort).
    teardown: Literal["fin", "rst"] = "fin"
    task: asyncio.Task[None] | None = None
    running: bool = False  # the task has started: cancelling it now runs its `finally`
    doomed: bool = False  # closed before its task started: the task only tears down

    def request_close(self, how: Literal["fin", "rst"]) -> None:
        """Make the link's task tear the link down with FIN or RST.

        Why not always ``task.cancel()``: a task cancelled before its first step never enters
        its coroutine, so its ``finally`` (which closes the sockets) would never run.
        """
        self.teardown = how
        if self.running and self.task is not None:
            self.task.cancel()
        else:
            self.doomed = True

    def writers(self) -> Iterator[asyncio.StreamWriter]:
        """Yield the writers that exist (the upstream one only once connected)."""
        yield self.client_writer
        if self.upstream_writer is not None:
            yield self.upstream_writer


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close a socket so that the peer gets RST rather than FIN.

    ``transport.abort()`` alone only skips the flush; the kernel still sends FIN. A zero
    linger time makes ``close()`` discard the connection and send RST.
    """
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close_writers(writers: list[asyncio.StreamWriter], *, rst: bool) -> None:
    """Close every writer (FIN, or RST if ``rst``) and wait until its socket is closed.

    Waiting matters: a transport whose socket is still open when the loop stops is reported
    as a ResourceWarning, and our tests turn warnings into errors.
    """
    for writer in writers:
        if rst:
            _abort_with_rst(writer)
        else:
            writer.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE):
            for writer in writers:
                with suppress(OSError):  # e.g. the peer had already reset it
                    await writer.wait_closed()
    except TimeoutError:
        # A peer that never reads keeps a clean close flushing forever; give up on it.
        for writer in writers:
            writer.transport.abort()
        for writer in writers:
            with suppress(OSError):
                await writer.wait_closed()


# --------------------------------------------------------------------------------------------
# The proxy.
# --------------------------------------------------------------------------------------------


class FaultProxy(AsyncService):
    """An asyncio TCP proxy from :attr:`address` to ``upstream`` that injects faults on command.

    Usage::

        async with FaultProxy(server_address) as proxy:
            client = await connect(*proxy.address)
            proxy.set_latency(0.1)           # live links slow down at once
            proxy.blackhole()                # the server looks alive but never answers
            proxy.heal()
            await proxy.reset()              # every link gets RST

    All methods must be called from the event loop the proxy was started in (use
    :class:`FaultProxyThread` from other threads). Each accepted connection opens its own
    upstream connection; each link runs in a task owned by the proxy, and :meth:`aclose`
    closes every link and awaits every task.

    Args:
        upstream: ``(host, port)`` of the real server.
        host: Address to listen on.
        port: Port to listen on; 0 lets the kernel choose (read it from :attr:`address`).
        connect_timeout: Seconds allowed to connect upstream before the client is dropped.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._faults = Faults()
        self._counters: dict[Direction, _Counters] = {d: _Counters() for d in _DIRECTIONS}
        self._accepted = 0
        self._refused = 0
        self._upstream_failures = 0
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._links: set[_Link] = set()
        self._links_changed = _Signal()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening.

        Raises:
            RuntimeError: If the proxy was already started or closed.
            OSError: If the address cannot be bound.
        """
        if self._server is not None or self._closed:
            raise RuntimeError("a FaultProxy can be started only once")
        # The callback is a plain function, so no task is created behind our back: we create
        # (and therefore own) the task that serves each connection.
        self._server = await asyncio.start_server(self._on_accept, self._host, self._port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (host, port)

    async def aclose(self) -> None:
        """Stop listening, close every link cleanly (FIN) and await every task; idempotent."""
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._close_links("fin")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            # Since 3.12 this waits for the accepted connections, which are all closed now.
            await server.wait_closed()

    # -- state ----------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` that clients connect to.

        Raises:
            RuntimeError: If the proxy has not been started.
        """
        if self._address is None:
            raise RuntimeError("FaultProxy not started")
        return self._address

    @property
    def connection_count(self) -> int:
        """Live links: accepted and not yet fully closed (including any still connecting)."""
        return len(self._links)

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._faults

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the byte and connection counters since the proxy was created."""
        return ProxyStats(
            upstream=DirectionStats(**self._counters_dict("upstream")),
            downstream=DirectionStats(**self._counters_dict("downstream")),
            accepted=self._accepted,
            refused=self._refused,
            upstream_failures=self._upstream_failures,
        )

    def _counters_dict(self, direction: Direction) -> dict[str, int]:
        c = self._counters[direction]
        return {"received": c.received, "forwarded": c.forwarded, "swallowed": c.swallowed}

    async def wait_connections(self, count: int, *, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` links are live.

        Why this exists: a client's ``connect()`` returns once the kernel has completed the
        handshake, before the proxy has seen the connection; a test that calls :meth:`cut`
        right after connecting must first wait here, or the link would escape the cut.

        Args:
            count: The number of live links to wait for.
            timeout: Seconds to wait.

        Raises:
            TimeoutError: If the count is not reached in time.
        """
        async with asyncio.timeout(timeout):
            while len(self._links) != count:
                await self._links_changed.wait()

    # -- faults -----------------------------------------------------------------------------------

    def set_latency(self, seconds: float, *, direction: DirectionArg = "both") -> None:
        """Delay every chunk by ``seconds`` after it reaches the proxy; order is preserved.

        With ``direction="both"`` a round trip gains ``2 * seconds``. Chunks already waiting
        are re-timed against the new value (so lowering the latency releases them sooner, but
        never ahead of an earlier chunk).

        Args:
            seconds: The added one-way delay; 0 removes it.
            direction: ``"upstream"`` (client → server), ``"downstream"`` or ``"both"``.

        Raises:
            ValueError: If ``seconds`` is negative or not finite, or ``direction`` is unknown.
        """
        self._update(direction, latency=float(seconds))

    def set_bandwidth(self, bytes_per_second: int | None, *, direction: DirectionArg = "both") -> None:
        """Limit each link's throughput in ``direction`` to ``bytes_per_second``.

        Data leaves in slices of at most :data:`PACING_INTERVAL` seconds' worth, so a limit
        is smooth rather than one burst per 64 KiB chunk. The limit is per link, not shared.

        Args:
            bytes_per_second: The limit, or ``None`` to remove it.
            direction: ``"upstream"``, ``"downstream"`` or ``"both"``.

        Raises:
            ValueError: If the limit is not a positive int or ``direction`` is unknown.
        """
        self._update(direction, bandwidth=bytes_per_second)

    def blackhole(self, direction: DirectionArg = "both") -> None:
        """Read and discard everything in ``direction``, on live and future links.

        The sockets stay open and keep being read, so the sender's writes succeed and its
        buffers never fill: the peer looks alive to TCP but says nothing. An EOF that arrives
        meanwhile is held until :meth:`heal`.

        Args:
            direction: ``"upstream"``, ``"downstream"`` or ``"both"``.

        Raises:
            ValueError: If ``direction`` is unknown.
        """
        self._update(direction, blackhole=True)

    def drop(self) -> None:
        """Drop everything both ways, like an iptables DROP rule: ``blackhole("both")``.

        A partition, as far as an unprivileged process can fake one; :meth:`heal` ends it.
        """
        self.blackhole("both")

    def refuse_new(self, refuse: bool = True) -> None:
        """Close new connections the moment they are accepted (the client reads EOF).

        We keep listening rather than closing the listening socket: the port stays ours
        (nobody else can take it while it is "down"), and the outcome is the same every time.
        The client's ``connect()`` still succeeds (the kernel completes the handshake before
        we see the connection); its first read returns EOF. Live links are not touched.

        Args:
            refuse: ``True`` to refuse, ``False`` to accept again.
        """
        self._set_faults(replace(self._faults, refuse_new=bool(refuse)))

    def heal(self) -> None:
        """Remove every fault: no latency, bandwidth limit, blackhole or refusal.

        Bytes swallowed by a blackhole are gone for good; only what arrives from now on is
        forwarded (plus any held EOF).
        """
        self._set_faults(Faults())

    def _update(self, direction: DirectionArg, **changes: object) -> None:
        faults = self._faults
        for d in _directions(direction):
            # `replace` re-runs LinkFaults validation, so a bad value changes nothing.
            faults = replace(faults, **{d: replace(faults.of(d), **changes)})  # type: ignore[arg-type]
        self._set_faults(faults)

    def _set_faults(self, faults: Faults) -> None:
        # One reference swap: a pipe reads either the old faults or the new ones, never a mix.
        self._faults = faults
        for link in self._links:
            for pipe in link.pipes:
                pipe.faults_changed()

    # -- breaking links -------------------------------------------------------------------------

    async def cut(self) -> None:
        """Close every live link cleanly: FIN to both ends, which read EOF.

        Bytes still queued (under latency) are dropped and counted as swallowed. New
        connections are still accepted.
        """
        await self._close_links("fin")

    async def reset(self) -> None:
        """Abort every live link: RST to both ends (SO_LINGER 0, then close).

        On Linux a peer blocked in ``recv`` gets ``ConnectionResetError``; data it had not
        read yet may be discarded by its kernel.
        """
        await self._close_links("rst")

    async def _close_links(self, how: Literal["fin", "rst"]) -> None:
        links = list(self._links)
        for link in links:
            link.request_close(how)
        # The link tasks close the sockets in their `finally`; wait until they have.
        await asyncio.gather(*(link.task for link in links if link.task is not None),
                             return_exceptions=True)

    # -- serving --------------------------------------------------------------------------------

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            # Accepted between aclose() and the listening socket closing: nobody will own it.
            writer.transport.abort()
            return
        if self._faults.refuse_new:
            self._refused += 1
            # Nothing is buffered, so the transport closes its socket on the loop's next
            # iteration; no task needed.
            writer.close()
            return
        self._accepted += 1
        link = _Link(reader, writer)
        link.task = self._spawn(self._serve_link(link))
        self._links.add(link)
        self._links_changed.notify()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # OSErrors are handled inside; anything else is a bug in this module, and a
            # harness bug must not pass silently as "the link died".
            _log.error("FaultProxy task failed", exc_info=task.exception())

    async def _serve_link(self, link: _Link) -> None:
        link.running = True
        try:
            if link.doomed:
                return
            try:
                async with asyncio.timeout(self._connect_timeout):
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:  # refused, unreachable, or TimeoutError (an OSError subclass)
                self._upstream_failures += 1
                return  # `finally` closes the client side with FIN
            link.upstream_writer = up_writer
            link.pipes = (
                _Pipe("upstream", link.client_reader, up_writer,
                      lambda: self._faults.upstream, self._counters["upstream"]),
                _Pipe("downstream", up_reader, link.client_writer,
                      lambda: self._faults.downstream, self._counters["downstream"]),
            )
            try:
                async with asyncio.TaskGroup() as group:
                    for pipe in link.pipes:
                        group.create_task(pipe.read_loop())
                        group.create_task(pipe.pump())
            except* OSError:
                # One end reset or vanished: pass the failure on to the other end as RST,
                # which is what a peer behind a real broken path would eventually see.
                link.teardown = "rst"
        finally:
            try:
                for pipe in link.pipes:
                    pipe.discard_pending()
                await _close_writers(list(link.writers()), rst=link.teardown == "rst")
            finally:
                # Only now: connection_count == 0 must mean every socket is closed.
                self._links.discard(link)
                self._links_changed.notify()


# --------------------------------------------------------------------------------------------
# The blocking wrapper.
# --------------------------------------------------------------------------------------------


class FaultProxyThread(Service):
    """A :class:`FaultProxy` on its own event loop in a daemon thread, driven by blocking calls.

    For code that is not async: tests with plain ``socket`` clients, notebooks. Every method
    runs the matching :class:`FaultProxy` method on the proxy's loop and waits for it.

    Usage::

        with FaultProxyThread(server_address) as proxy:
            sock = socket.create_connection(proxy.address)
            proxy.blackhole()
            ...

    Args:
        upstream: ``(host, port)`` of the real server.
        host: Address to listen on.
        port: Port to listen on; 0 lets the kernel choose.
        connect_timeout: Seconds allowed to connect upstream (see :class:`FaultProxy`).
        call_timeout: Seconds any single call may take before ``TimeoutError``.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
        call_timeout: float = 10.0,
    ) -> None:
        self.upstream = upstream
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy: FaultProxy | None = None
        self._stop_requested: asyncio.Event | None = None
        # Resolved by the thread once the proxy listens (or failed to).
        self._started: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._error: BaseException | None = None
        self._address: tuple[str, int] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and the proxy; return once it listens.

        Returns:
            ``self``.

        Raises:
            RuntimeError: If already started.
            OSError: If the address cannot be bound.
            TimeoutError: If the proxy does not start within ``call_timeout``.
        """
        if self._thread is not None:
            raise RuntimeError("a FaultProxyThread can be started only once")
        self._thread = threading.Thread(
            target=self._run, name=f"FaultProxy->{self.upstream[0]}:{self.upstream[1]}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._address = self._started.result(self._call_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Close the proxy (every link gets FIN), stop its loop and join the thread; idempotent.

        Args:
            timeout: Seconds to wait for the thread; default ``call_timeout``.

        Raises:
            TimeoutError: If the thread does not finish in time.
            BaseException: Whatever closing the proxy raised in the thread.
        """
        thread = self._thread
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(self._call_timeout if timeout is None else timeout)
        if thread.is_alive():
            raise TimeoutError(f"{thread.name} did not stop")
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        # asyncio.run gives the thread's loop a full, clean shutdown (tasks, async
        # generators, executor) after _main returns.
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()/stop(), not lost in the thread
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                self._error = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        proxy = FaultProxy(self.upstream, host=self._host, port=self._port,
                           connect_timeout=self._connect_timeout)
        await proxy.start()
        self._proxy = proxy
        self._started.set_result(proxy.address)
        try:
            await self._stop_requested.wait()
        finally:
            await proxy.aclose()

    def _call(self, action: Callable[[FaultProxy], _T]) -> _T:
        """Run the synchronous ``action(proxy)`` on the proxy's loop and return its result.

        Why even a property read goes through the loop: the proxy's synchronous methods wake
        the links' asyncio events, which are not thread-safe, and reads then see a consistent
        state between two loop steps.

        Raises:
            RuntimeError: If the thread is not running.
            TimeoutError: If the call takes longer than ``call_timeout``.
        """

        async def on_loop(proxy: FaultProxy) -> _T:
            return action(proxy)

        return self._call_async(on_loop)

    def _call_async(self, action: Callable[[FaultProxy], Coroutine[Any, Any, _T]]) -> _T:
        """Run the coroutine ``action(proxy)`` on the proxy's loop and return its result.

        Raises:
            RuntimeError: If the thread is not running.
            TimeoutError: If the call takes longer than ``call_timeout``.
        """
        loop, proxy = self._loop, self._proxy
        if loop is None or proxy is None or loop.is_closed():
            raise RuntimeError("FaultProxyThread is not running")
        future = asyncio.run_coroutine_threadsafe(action(proxy), loop)
        try:
            return future.result(self._call_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    # -- the FaultProxy API, blocking ----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` that clients connect to.

        Raises:
            RuntimeError: If not started.
        """
        if self._address is None:
            raise RuntimeError("FaultProxyThread not started")
        return self._address

    @property
    def connection_count(self) -> int:
        """Live links (see :attr:`FaultProxy.connection_count`)."""
        return self._call(lambda p: p.connection_count)

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._call(lambda p: p.faults)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters (see :attr:`FaultProxy.stats`)."""
        return self._call(lambda p: p.stats)

    def wait_connections(self, count: int, *, timeout: float = 5.0) -> None:
        """Block until exactly ``count`` links are live (see :meth:`FaultProxy.wait_connections`).

        Raises:
            TimeoutError: If the count is not reached in time.
        """
        self._call_async(lambda p: p.wait_connections(count, timeout=timeout))

    def set_latency(self, seconds: float, *, direction: DirectionArg = "both") -> None:
        """See :meth:`FaultProxy.set_latency`.

        Raises:
            ValueError: On a bad value or direction.
        """
        self._call(lambda p: p.set_latency(seconds, direction=direction))

    def set_bandwidth(self, bytes_per_second: int | None, *, direction: DirectionArg = "both") -> None:
        """See :meth:`FaultProxy.set_bandwidth`.

        Raises:
            ValueError: On a bad value or direction.
        """
        self._call(lambda p: p.set_bandwidth(bytes_per_second, direction=direction))

    def blackhole(self, direction: DirectionArg = "both") -> None:
        """See :meth:`FaultProxy.blackhole`.

        Raises:
            ValueError: On a bad direction.
        """
        self._call(lambda p: p.blackhole(direction))

    def drop(self) -> None:
        """See :meth:`FaultProxy.drop`."""
        self._call(lambda p: p.drop())

    def refuse_new(self, refuse: bool = True) -> None:
        """See :meth:`FaultProxy.refuse_new`."""
        self._call(lambda p: p.refuse_new(refuse))

    def heal(self) -> None:
        """See :meth:`FaultProxy.heal`."""
        self._call(lambda p: p.heal())

    def cut(self) -> None:
        """See :meth:`FaultProxy.cut`; returns once every link is closed."""
        self._call_async(lambda p: p.cut())

    def reset(self) -> None:
        """See :meth:`FaultProxy.reset`; returns once every link is aborted."""
        self._call_async(lambda p: p.reset())
