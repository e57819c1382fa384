"""Deciding when a peer is dead: the heartbeat as a small state machine, with no I/O.

A long-lived connection can die without a word: the peer's process is frozen or killed, its
machine loses power, a firewall forgets the connection. TCP notices none of that quickly: a
socket to a frozen process stays open, and the kernel even acknowledges our bytes. Only the
application can tell, by expecting to *hear* from the peer.

The rule used by both ends of a v2.1 connection:

* every byte read counts as a sign of life (answers, requests and pongs alike);
* a side that has read nothing for ``interval`` sends a PING (only the client does; the server
  answers PONG), so a healthy but idle connection still carries a little traffic;
* a side that has read nothing for ``idle_timeout`` closes the connection.

Why ``idle_timeout`` is a multiple of ``interval`` (3 by default, and at least 2): with a timeout
of exactly one interval, a single ping that is late by a millisecond (a GC pause, a busy core)
would kill a healthy connection. Two intervals leave room for one lost or late ping; three for
two. The worst-case time to detect a dead peer is therefore ``idle_timeout`` (plus the timer's
tick), and the cost is one small frame each way per ``interval`` on an idle connection.

:class:`Heartbeat` holds only timestamps and is driven by the caller with the current time, so
it can be tested with a fake clock and reused by the client and the server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Heartbeat", "Action", "detection_budget"]


class Action(enum.Enum):
    """What the connection should do now."""

    NOTHING = "nothing"
    PING = "ping"
    CLOSE = "close"


class Heartbeat:
    """Liveness of one connection, as seen from one side.

    Args:
        interval: seconds of silence after which a ping is due (None: this side never pings).
        idle_timeout: seconds of silence after which the peer is declared dead.
        now: the current time, from the same clock later passed to :meth:`poll`.
    """

    __slots__ = ("interval", "idle_timeout", "last_read", "last_ping")

    def __init__(self, interval: float | None, idle_timeout: float, now: float) -> None:
        self.interval = interval
        self.idle_timeout = idle_timeout
        self.last_read = now
        self.last_ping = -1.0

    def on_read(self, now: float) -> None:
        """Record that bytes arrived (called for every read: it must be cheap)."""
        self.last_read = now

    def poll(self, now: float) -> tuple[Action, float]:
        """What to do at time ``now``, and when to poll next.

        Returns:
            ``(action, next_poll_time)``.
        """
        silent = now - self.last_read
        dead_at = self.last_read + self.idle_timeout
        if silent >= self.idle_timeout:
            return Action.CLOSE, now
        if self.interval is None:
            return Action.NOTHING, dead_at
        # One ping per silent period: after pinging, wait for the answer (or the deadline).
        ping_at = max(self.last_read, self.last_ping) + self.interval
        if now >= ping_at:
            self.last_ping = now
            return Action.PING, min(now + self.interval, dead_at)
        return Action.NOTHING, min(ping_at, dead_at)


@dataclass(frozen=True)
class DetectionBudget:
    """How long a dead peer can go unnoticed, and what the heartbeat costs."""

    worst_case_detection: float
    pings_per_minute_idle: float
    bytes_per_minute_idle: int


def detection_budget(interval: float, idle_timeout: float, frame_size: int = 16) -> DetectionBudget:
    """Worst-case time to detect a dead peer, and the idle traffic, for a heartbeat setting."""
    pings = 60.0 / interval
    return DetectionBudget(idle_timeout, pings, int(pings * 2 * frame_size))
