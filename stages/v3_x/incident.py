"""Staged incidents (v3.2): make a provider fail, slow down or freeze on command.

Fault tolerance is learned by watching it work, so a v3 provider started with ``--incidents``
binds one more interface, :class:`IncidentApi`, through which a notebook, a test or a user makes
it misbehave for a number of seconds, while its consumers carry on:

==========  ====================================================================================
incident    what the provider does, and what its consumers see
==========  ====================================================================================
``fail``    cuts the connection that carried each call: the call fails on transport
            (``ConnectionClosedError``), as with a provider that crashes on every request
``slow``    runs each call ``delay`` seconds late: calls whose deadline is shorter time out, the
            others are slow (the breaker's slow-call rate)
``freeze``  stops its event loop: nothing is read or answered, not even a ping, though the
            kernel still accepts connections (a stuck event loop, a long pause). Its ZooKeeper
            session lives on, in kazoo's own thread: only the consumers can tell
``heal``    ends any incident now
==========  ====================================================================================

The control interface is never listed in the registry (a consumer must not find it by accident)
and never suffers the incidents itself. Call it on one provider by address, for example with a
v2.1 client, or with ``python -m stages.v3_x incident --at HOST:PORT slow --delay 0.5 --seconds
10``. Never enable it on a provider that real users depend on: whoever reaches the port can
stage an incident.

:class:`Incidents` is the state, pure and driven by ``now`` like the breaker.
"""

from __future__ import annotations

import abc
import asyncio
import math
import time
from dataclasses import dataclass

from stages.v2_0.api import rpc_api
from stages.v3_x.errors import ConfigError

__all__ = ["IncidentApi", "IncidentControl", "Incidents", "Incident"]

#: The longest incident or delay that can be staged, in seconds.
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Incident:
    """One staged incident: its kind, until when, and (``slow``) the delay."""

    kind: str
    until: float
    delay: float = 0.0


class Incidents:
    """The incident in force on one provider, if any (one at a time: a new one replaces it)."""

    def __init__(self) -> None:
        self.current: Incident | None = None
        #: Every incident staged, in order (for the curious).
        self.history: list[Incident] = []

    def stage(self, kind: str, seconds: float, now: float, delay: float = 0.0) -> Incident:
        incident = Incident(kind, now + _seconds(seconds, "seconds"),
                            _seconds(delay, "delay") if kind == "slow" else 0.0)
        self.current = incident
        self.history.append(incident)
        return incident

    def heal(self) -> None:
        self.current = None

    def active(self, now: float) -> Incident | None:
        incident = self.current
        if incident is not None and now >= incident.until:
            self.current = incident = None
        return incident


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise ConfigError(f"{what} must be a number of seconds in (0, {MAX_SECONDS:g}], got "
                          f"{value!r}")
    return float(value)


@rpc_api(namespace="walkthrough.control")
class IncidentApi(abc.ABC):
    """Stage an incident on the provider that serves this interface."""

    @abc.abstractmethod
    def fail(self, seconds: float) -> str:
        """For ``seconds``, cut the connection of every call."""

    @abc.abstractmethod
    def slow(self, delay: float, seconds: float) -> str:
        """For ``seconds``, run every call ``delay`` seconds late."""

    @abc.abstractmethod
    def freeze(self, seconds: float) -> str:
        """Stop the event loop for ``seconds`` (this call is answered first)."""

    @abc.abstractmethod
    def heal(self) -> str:
        """End any incident now."""


class IncidentControl(IncidentApi):
    """The implementation a provider binds (inline: each method returns at once).

    Its methods run on the provider's event loop (bound inline), whose clock the incidents use.
    """

    def __init__(self, incidents: Incidents) -> None:
        self.incidents = incidents

    def fail(self, seconds: float) -> str:
        self.incidents.stage("fail", seconds, asyncio.get_running_loop().time())
        return f"failing for {seconds:g} s"

    def slow(self, delay: float, seconds: float) -> str:
        self.incidents.stage("slow", seconds, asyncio.get_running_loop().time(), delay)
        return f"{delay:g} s late for {seconds:g} s"

    def freeze(self, seconds: float) -> str:
        loop = asyncio.get_running_loop()
        self.incidents.stage("freeze", seconds, loop.time())
        # Once this answer is written, the loop sleeps, holding everything else up.
        loop.call_later(0.05, time.sleep, seconds)
        return f"freezing for {seconds:g} s"

    def heal(self) -> str:
        self.incidents.heal()
        return "healed"
