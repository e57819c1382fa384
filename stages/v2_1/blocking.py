"""The blocking proxy's fast path: a calling thread that owns a connection while it waits.

A blocking proxy is called from a thread that is not the client's event loop. The plain way to
make its call is to hand it to the loop's thread and wait for the answer to be handed back
(:meth:`~stages.v2_0.client._LoopThread.run`): the loop's thread must wake up to send, and the
caller must wake up again once the loop has read the answer. Each wake-up is a trip through the
operating system's scheduler, and on a busy two-core machine the hand-over alone, with no call in
it, measured a median of 123 µs there and back (53 µs with the least machinery: a lock released
by ``call_soon_threadsafe``), more than a whole call on loopback takes through a plain socket.

So a blocking call borrows a connection of its own, a :class:`DirectConnection`, and does its
I/O itself: ``sendall`` the request, ``recv`` until its answer is there, in the calling thread.
This is how RPyC's and Pyro5's proxies call, and it is why they are fast one call at a time. The
frames, the serializers and the errors are v2.1's; only who waits changes:

* **Connections are pooled** (:class:`DirectPool`). A thread takes an idle connection or opens
  one, and gives it back after the call. At most ``ClientConfig.direct_connections`` are open at
  once; past that, calls take the hand-over route over the client's multiplexed connection, so
  a hundred threads never mean a hundred connections. 0 turns the fast path off.
* **The heartbeat runs while a call waits.** The caller does not wait in one long ``recv``: it
  wakes when v2.1's :class:`~stages.v2_1.heartbeat.Heartbeat` says a PING is due, sends it, and
  gives up with :class:`ConnectionClosedError` once the server has been silent for
  ``idle_timeout``, exactly as the multiplexed connection does: a frozen server or a black-holed
  link is found dead in ``idle_timeout``, not at the call's deadline.
* **An idle connection does not ping**: nobody waits on it, and the server's idle timeout may
  close it, with a GOAWAY. Before each call the borrower reads, without waiting, whatever the
  server sent meanwhile (:meth:`DirectConnection.usable`): a GOAWAY, a PING (answered), or the
  end of the connection; a connection that is going away is closed and another is taken. Nothing
  was sent on it, so nothing is lost.
* **A timed-out connection is closed**, not reused: its answer may still arrive, and the next
  call must not read it. The server sees the connection end and cancels the call.
* The route is only for calls that need nothing from the loop: a client with interceptors (they
  are coroutines), TLS, or a first frame to send (v3.3's token) calls through the hand-over
  route. v3.x's blocking proxies use the same connections, one pool per provider, and take the
  balancer's and breakers' decisions in the calling thread (``stages.v3_x.client``).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

from stages.v2_0.errors import ConnectionClosedError, ProtocolError, RpcTimeoutError
from stages.v2_1.heartbeat import Action, Heartbeat
from stages.v2_1.protocol import (
    PING_FRAME,
    PONG_FRAME,
    Frame,
    FrameCodec,
    FrameType,
    GoAway,
    goaway_reason,
)

__all__ = ["DirectConnection", "DirectPool", "READ_SIZE"]

#: Bytes one read may take (what asyncio's transports ask the socket for, too).
READ_SIZE = 256 * 1024


class DirectConnection:
    """A blocking socket to the server, used by one calling thread at a time.

    Args:
        address: the server's ``(host, port)``.
        max_frame_size: the largest frame sent or read.
        connect_timeout: seconds the connection may take to open.
        heartbeat_interval, idle_timeout: the heartbeat of a waiting call (see ClientConfig).

    Raises:
        OSError: the connection could not be opened.
    """

    def __init__(self, address: tuple[str, int], max_frame_size: int, connect_timeout: float,
                 heartbeat_interval: float, idle_timeout: float) -> None:
        self.where = f"{address[0]}:{address[1]}"
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self.sock = socket.create_connection(address, timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # From here on the socket blocks, and the kernel bounds each wait (see _bound).
        self.sock.settimeout(None)
        self._bounds = {socket.SO_SNDTIMEO: 0.0, socket.SO_RCVTIMEO: 0.0}  # 0.0: none yet
        self.codec = FrameCodec(max_frame_size=max_frame_size)
        self.goaway: GoAway | None = None
        self.open = True
        self._last_id = 0
        # Reads land in a buffer kept for the connection's life, as v2.1's loop reads do (see
        # stages.v2_1.reader: a new 256 KiB object per read would cost mmap and munmap calls).
        self._buffer = bytearray(READ_SIZE)

    @property
    def calls(self) -> int:
        """Calls made on this connection so far."""
        return self._last_id

    def usable(self) -> bool:
        """Read, without waiting, what the server sent while the connection sat idle; True if
        it may carry a call (still open, no GOAWAY)."""
        try:
            while self.open and self.goaway is None:
                # MSG_DONTWAIT: this one read does not wait, whatever the socket's mode.
                received = self.sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
                if not received:
                    self.close()
                    break
                self._read(memoryview(self._buffer)[:received], 0)
        except BlockingIOError:
            pass  # nothing more to read: the usual case
        except (OSError, ProtocolError):
            self.close()
        return self.open and self.goaway is None

    def call(self, request: Frame, timeout: float) -> Frame:
        """Send ``request`` (under a request id of this connection) and wait for its answer.

        Raises:
            RpcTimeoutError: no answer within ``timeout``; the connection is closed.
            ConnectionClosedError: the connection ended, broke the protocol, or was silent for
                ``idle_timeout`` (found dead by the heartbeat) first.
        """
        self._last_id += 1
        request_id = self._last_id
        now = time.monotonic()
        deadline = now + timeout
        # The silence of the idle time in the pool does not count: this call starts the clock.
        heartbeat = Heartbeat(self.heartbeat_interval, self.idle_timeout, now)
        try:
            self._bound(socket.SO_SNDTIMEO, timeout)
            self.sock.sendall(self.codec.encode(request._replace(request_id=request_id)))
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError
                action, next_poll = heartbeat.poll(now)
                if action is Action.PING:
                    self.sock.sendall(PING_FRAME)
                elif action is Action.CLOSE:
                    raise ConnectionClosedError(
                        f"{self.where} sent nothing for {self.idle_timeout:.3g} s (heartbeat "
                        "idle timeout): connection closed as dead")
                self._bound(socket.SO_RCVTIMEO, min(deadline, next_poll) - now)
                try:
                    received = self.sock.recv_into(self._buffer)
                except BlockingIOError:
                    continue  # a ping is due, the server is found dead, or the deadline passed
                if not received:
                    raise ConnectionClosedError(f"{self.where} closed the connection before "
                                                "answering")
                heartbeat.on_read(time.monotonic())
                answer = self._read(memoryview(self._buffer)[:received], request_id)
                if answer is not None:
                    return answer
        except (TimeoutError, BlockingIOError):  # the call's time passed, or a send's bound did
            self.close()
            raise RpcTimeoutError(f"no answer from {self.where} within {timeout:.3g} s") from None
        except ConnectionClosedError:
            self.close()
            raise
        except (OSError, ProtocolError) as exc:
            self.close()
            raise ConnectionClosedError(f"connection to {self.where} failed: {exc}") from exc

    def _bound(self, option: int, seconds: float) -> None:
        """Let the kernel end a wait (``SO_RCVTIMEO``: a receive; ``SO_SNDTIMEO``: a send)
        after about ``seconds``, with EAGAIN (``BlockingIOError``).

        Why not ``sock.settimeout``: a Python socket with a timeout calls poll() before every
        send and receive, and changing its timeout is one more system call; one call paid five
        system calls for its waits this way. The kernel's bound costs none while it stays: it is
        set again only when the one in force is too long (by over a millisecond) or under half
        of what is asked, and one call after another asks nearly the same. Waking early costs
        one more turn of the caller's loop, never a wrong answer.
        """
        current = self._bounds[option]
        if seconds * 0.5 <= current <= seconds + 0.001:
            return
        seconds = max(seconds, 0.0001)  # a bound of 0 would mean: wait for ever
        whole = int(seconds)
        self.sock.setsockopt(socket.SOL_SOCKET, option,
                             struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))
        self._bounds[option] = seconds

    def _read(self, data: memoryview, request_id: int) -> Frame | None:
        """Take the frames in ``data``: the answer to ``request_id`` is returned; a PING is
        answered, a GOAWAY noted, anything else (an answer nobody waits for) dropped."""
        self.codec.feed(data)
        answer = None
        for frame in self.codec.frames():
            if frame.type == FrameType.RESPONSE and frame.request_id == request_id:
                answer = frame
            elif frame.type == FrameType.PING:
                self.sock.sendall(PONG_FRAME)
            elif frame.type == FrameType.GOAWAY:
                self.goaway = goaway_reason(frame)
        return answer

    def close(self) -> None:
        self.open = False
        self.sock.close()


class DirectPool:
    """The direct connections of one client: idle ones kept, at most ``limit`` open at once.

    Args:
        connect: opens a new :class:`DirectConnection` (raises OSError if it cannot).
        limit: the most connections open at once (idle and in use).
    """

    def __init__(self, connect: Callable[[], DirectConnection], limit: int) -> None:
        self._connect = connect
        self.limit = limit
        self._idle: list[DirectConnection] = []
        self._open = 0
        self._lock = threading.Lock()
        self._closed = False
        #: Connections opened so far.
        self.connects = 0

    def borrow(self) -> DirectConnection | None:
        """An idle connection that is still usable, or a new one; None when ``limit`` are in
        use (the caller then takes the hand-over route).

        Raises:
            OSError: a new connection could not be opened.
        """
        while True:
            with self._lock:
                if self._closed:
                    return None
                if self._idle:
                    conn = self._idle.pop()
                elif self._open < self.limit:
                    self._open += 1
                    break
                else:
                    return None
            if conn.usable():
                return conn
            self._forget(conn)  # gone while idle (GOAWAY, closed): try the next one
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
            raise
        with self._lock:
            self.connects += 1
        return conn

    def give_back(self, conn: DirectConnection) -> None:
        """Return a borrowed connection: kept if it may carry another call, else closed."""
        with self._lock:
            if conn.open and conn.goaway is None and not self._closed:
                self._idle.append(conn)
                return
        self._forget(conn)

    def _forget(self, conn: DirectConnection) -> None:
        conn.close()
        with self._lock:
            self._open -= 1

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn in idle:
            conn.close()
