"""Configuration of v2.1: v2.0's settings plus heartbeats, limits and reconnection.

The two sides' heartbeat settings must agree: the server closes a connection that has been
silent for its ``idle_timeout``, so that must be longer than the clients' ``heartbeat_interval``,
or the server would cut off healthy idle clients between two pings. The defaults keep a factor
of 3 (client pings after 5 s of silence; server closes after 15 s).

The server's limits say how much one client, and all of them together, may make it hold (the
reason for each default is given with the setting, in :class:`ServerConfig`):

======================  =======  ==============================================================
setting                 default  what it bounds
======================  =======  ==============================================================
max_frame_size          16 MiB   one frame, in and out (v1.0); a connection holds at most one
                                 unfinished frame
max_connections         1000     connections open at once (v1.0)
max_concurrent_calls    1000     calls of one connection running at once
max_server_calls        10000    calls of all connections running at once
max_workers             32       threads running plain (blocking) methods
======================  =======  ==============================================================

Every duration is a finite number of seconds (v1.0's ``check_positive`` refuses ``inf`` and
``nan``): each becomes an event-loop timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.v1_0.config import check_count, check_positive
from stages.v2_0 import config as v2_0
from stages.v2_0.errors import ConfigError

__all__ = ["ServerConfig", "ClientConfig"]


@dataclass(frozen=True, kw_only=True)
class ServerConfig(v2_0.ServerConfig):
    """Server settings of v2.0, plus:

    Attributes:
        idle_timeout: (v1.0's setting, new default) seconds without reading anything from a
            client before its connection is closed as dead.
        min_ping_interval: clients may ping at most this often. A ping that comes sooner after
            the previous one is a *strike*.
        max_ping_strikes: strikes tolerated; one more and the client gets GOAWAY
            ``too_many_pings`` and is disconnected.
        max_concurrent_calls: calls of one connection running at once. Past it the server stops
            reading from that connection until calls finish: TCP then pushes back on the client,
            instead of the server buffering without limit.
        max_server_calls: calls of all connections running at once. Past it *every* connection
            stops reading, and they read again once a quarter of the calls have finished. The
            per-connection limit alone would let 1000 clients start a million calls; this one
            bounds the server's memory whatever the number of clients (each call holds its
            arguments, a task or a queued thread-pool item, and then its answer). 10,000 calls
            of a few kilobytes each stay within tens of megabytes.
        max_workers: threads of the pool that runs plain (``def``) methods, so that a method
            that blocks (on a disk, a lock, a C library) blocks its thread and not the event
            loop. 32 is what the standard library's own executor settles on for many cores
            (``min(32, cpu_count + 4)``) and close to Starlette's 40: enough for many slow
            calls at once; more would not make pure-Python work faster (the GIL runs one thread
            at a time) and each thread costs a stack. Calls past it wait for a free thread
            (still counted by both call limits).
        shutdown_grace: seconds a graceful shutdown waits for calls in flight before closing.
        fastpath: use the hot path's quicker argument check and offer pickle with records
            (:mod:`stages.v2_1.fastpath`); False serves with v2.0's plain pieces only, to
            measure what the hot path buys.
    """

    idle_timeout: float = 15.0
    min_ping_interval: float = 1.0
    max_ping_strikes: int = 2
    max_concurrent_calls: int = 1000
    max_server_calls: int = 10_000
    max_workers: int = 32
    shutdown_grace: float = 5.0
    fastpath: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "min_ping_interval", "shutdown_grace")
        check_count(self, "max_concurrent_calls", "max_server_calls", "max_workers")
        if isinstance(self.max_ping_strikes, bool) or not isinstance(self.max_ping_strikes, int) \
                or self.max_ping_strikes < 0:
            raise ConfigError(f"ServerConfig.max_ping_strikes must be an int >= 0, got "
                              f"{self.max_ping_strikes!r}")


@dataclass(frozen=True, kw_only=True)
class ClientConfig(v2_0.ClientConfig):
    """Client settings of v2.0, plus:

    Attributes:
        heartbeat_interval: seconds of silence on a connection after which the client pings.
        idle_timeout: seconds of silence after which the server is declared dead and the
            connection closed (every call pending on it fails at once). Default: 3 intervals.
            Less than 2 intervals is refused: one late pong would then kill a healthy connection.
        connect_timeout: seconds one connection attempt may take.
        backoff_initial, backoff_max, backoff_multiplier, backoff_jitter: after a failed
            connection attempt the next one waits ``backoff_initial``, then that times
            ``backoff_multiplier`` after each further failure, up to ``backoff_max``, each wait
            randomised by +/- ``backoff_jitter`` (a fraction) so that many clients do not
            reconnect in lockstep. Calls made while waiting fail at once.
        fastpath: call with the hot path's quicker argument check and pickle with records
            (:mod:`stages.v2_1.fastpath`); False calls with v2.0's plain pieces.
        direct_connections: connections that blocking proxies' calls may own while they wait
            (:mod:`stages.v2_1.blocking`); past it, and with 0, a blocking call is handed to the
            client's event-loop thread and its multiplexed connection.
    """

    heartbeat_interval: float = 5.0
    idle_timeout: float | None = None
    connect_timeout: float = 3.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
    fastpath: bool = True
    direct_connections: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.direct_connections, bool) \
                or not isinstance(self.direct_connections, int) or self.direct_connections < 0:
            raise ConfigError(f"ClientConfig.direct_connections must be an int >= 0, got "
                              f"{self.direct_connections!r}")
        check_positive(self, "heartbeat_interval", "connect_timeout", "backoff_initial",
                       "backoff_max", "backoff_multiplier")
        if self.idle_timeout is None:
            object.__setattr__(self, "idle_timeout", 3 * self.heartbeat_interval)
        check_positive(self, "idle_timeout")
        assert self.idle_timeout is not None
        if self.idle_timeout < 2 * self.heartbeat_interval:
            raise ConfigError(
                f"ClientConfig.idle_timeout ({self.idle_timeout} s) must be at least twice the "
                f"heartbeat_interval ({self.heartbeat_interval} s): otherwise one late pong "
                "closes a healthy connection")
        jitter = self.backoff_jitter
        # Checked by hand (0 is allowed); NaN fails the comparison, so it is refused too.
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) \
                or not 0 <= jitter < 1:
            raise ConfigError(f"ClientConfig.backoff_jitter must be in [0, 1), got "
                              f"{self.backoff_jitter!r}")
        if self.backoff_multiplier < 1:
            raise ConfigError("ClientConfig.backoff_multiplier must be >= 1")

    @property
    def idle(self) -> float:
        """``idle_timeout`` as a float (it is always set after construction)."""
        assert self.idle_timeout is not None
        return self.idle_timeout
