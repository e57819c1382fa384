"""Configuration of v1.0: one frozen, validated dataclass per side.

A configuration is built once, checked once (in ``__post_init__``), and never changed: to change
a setting, build a new object with :func:`dataclasses.replace`. Nothing reads a global.

Every duration must be a *finite* number of seconds. Durations end up as event-loop timers, and
the loop keeps its timers in a heap ordered by deadline: an infinite deadline never fires, and
NaN, which is neither smaller nor larger than anything, breaks the heap's order for every other
timer. So ``inf`` and ``nan`` are refused here, where the mistake is made, not discovered later
as a heartbeat that never comes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stages.v1_0.errors import ConfigError
from stages.v1_0.protocol import DEFAULT_MAX_FRAME_SIZE

__all__ = ["ServerConfig", "ClientConfig", "check_positive", "check_count"]


def check_positive(owner: object, *names: str) -> None:
    """Raise :class:`ConfigError` unless every named attribute of ``owner`` is a finite
    number > 0 (``inf`` and ``nan`` are refused: see the module's docstring)."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not value > 0:
            raise ConfigError(f"{type(owner).__name__}.{name} must be a finite number > 0, "
                              f"got {value!r}")


def check_count(owner: object, *names: str) -> None:
    """Raise :class:`ConfigError` unless every named attribute of ``owner`` is an int >= 1
    (a number of bytes, connections or calls is never fractional)."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{type(owner).__name__}.{name} must be an int >= 1, got {value!r}")


def _check_address(owner: object, host: str, port: int) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{type(owner).__name__}.host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{type(owner).__name__}.port must be 0..65535, got {port!r}")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Server settings.

    Attributes:
        host, port: where to listen; port 0 lets the OS pick a free port.
        max_frame_size: largest frame body accepted, in bytes, and largest sent: an answer
            larger than this is replaced by a TOO_LARGE error for its request.
        frame_timeout: seconds a started frame may take to arrive completely. A peer that sends
            half a frame and then trickles (or stops) is disconnected after this, so it cannot
            hold a connection open for ever ("slowloris"). The clock starts when the frame's
            first byte arrives, so a client that streams many frames is judged frame by frame.
        idle_timeout: seconds a connection may stay silent between frames before it is closed.
        max_connections: connections open at once. One more is accepted only to be told
            UNAVAILABLE and closed (and a line is logged). Together with ``max_frame_size`` it
            bounds what the server buffers for unfinished frames: each connection holds at most
            one partial frame. The default, 1000, stays below the usual limit of 1024 open files
            per process, so the server refuses cleanly before ``accept`` starts failing.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    frame_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        _check_address(self, self.host, self.port)
        check_count(self, "max_frame_size", "max_connections")
        check_positive(self, "frame_timeout", "idle_timeout")


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Client settings.

    Attributes:
        timeout: seconds a whole call (connect, send, answer) may take.
        max_frame_size: largest response body accepted, in bytes.
    """

    timeout: float = 5.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    def __post_init__(self) -> None:
        check_count(self, "max_frame_size")
        check_positive(self, "timeout")
