"""Outlier detection (v3.2): a provider that stops answering is set aside at once, for a while.

A frozen provider is the hardest failure to see. Its process is stopped, but the kernel still
accepts connections on its port, so connecting succeeds; a call sent to it is simply never
answered. v2.1's heartbeat declares the connection dead after ``idle_timeout`` (15 s by default)
and fails the calls pending on it, but the next call reconnects (the kernel says yes again) and
waits in turn. The registry does not help either: the provider's ZooKeeper session lasts until
its timeout, and a provider stuck behind a firewall may keep it for ever.

So each client keeps its own verdict, as Envoy's outlier detection and Finagle's failure accrual
do: a provider whose call was not answered (it timed out, or its connection died under it, or
no connection could be made) is **ejected** from the candidates at once, for an ejection time
that doubles each time it is ejected again and is capped. When the time is up, the provider is
a candidate again; one answered call forgives it (the next ejection starts from the base time
again). Answers that carry an exception the method raised are answers: the provider works.

Two limits keep detection from doing harm:

* at most ``max_ejected_fraction`` of the providers are ejected at once (at least one may be):
  when many providers fail together the problem is probably not theirs (the client's network,
  an overloaded downstream), and ejecting them all would leave nothing to call;
* an ejected provider is skipped only while others remain: the balancer falls back to it when
  nothing else is left (as it does for weight 0).

Like the breaker, the detector does no I/O and reads no clock: it is driven with ``now``, and its
decisions are handed to listeners as :class:`Ejection` events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stages.v1_0.config import check_positive
from stages.v3_x.errors import ConfigError

__all__ = ["OutlierConfig", "OutlierDetector", "Ejection"]


@dataclass(frozen=True, kw_only=True)
class OutlierConfig:
    """When a provider is set aside, and for how long.

    Attributes:
        base_ejection: seconds of the first ejection; each further ejection in a row doubles it.
        max_ejection: the longest ejection, in seconds.
        max_ejected_fraction: the largest share of the known providers ejected at once (one
            provider may always be ejected, whatever the share).
    """

    base_ejection: float = 5.0
    max_ejection: float = 60.0
    max_ejected_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_positive(self, "base_ejection", "max_ejection")
        if self.max_ejection < self.base_ejection:
            raise ConfigError("OutlierConfig.max_ejection must be at least base_ejection")
        fraction = self.max_ejected_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 <= fraction <= 1:
            raise ConfigError(f"OutlierConfig.max_ejected_fraction must be in [0, 1], got "
                              f"{fraction!r}")


@dataclass(frozen=True)
class Ejection:
    """A provider set aside: until when, how many times in a row, and why."""

    key: str
    until: float
    times: int
    reason: str


@dataclass
class _Record:
    until: float = -math.inf
    times: int = 0


@dataclass
class OutlierDetector:
    """The ejection state of one client's providers (by key, ``host:port``)."""

    config: OutlierConfig = field(default_factory=OutlierConfig)
    #: Called with every ejection (the notebook and metrics listen).
    listeners: list[Callable[[Ejection], None]] = field(default_factory=list)
    _records: dict[str, _Record] = field(default_factory=dict)

    def ejected(self, key: str, now: float) -> bool:
        """Whether ``key`` is set aside at ``now``."""
        record = self._records.get(key)
        return record is not None and now < record.until

    def ejected_keys(self, now: float) -> set[str]:
        return {key for key, record in self._records.items() if now < record.until}

    def failed(self, key: str, now: float, reason: str, known: Iterable[str]) -> Ejection | None:
        """A call to ``key`` went unanswered: eject it, unless it is ejected already (the calls
        of one incident fail together: they make one ejection) or too many are.

        Args:
            known: the keys of every provider the client knows now (for the ejected share).

        Returns:
            The ejection, or None if the provider was not ejected.
        """
        record = self._records.setdefault(key, _Record())
        if now < record.until:
            return None
        known = set(known) | {key}
        allowed = max(1, math.floor(self.config.max_ejected_fraction * len(known)))
        if len(self.ejected_keys(now) & known) >= allowed:
            return None
        record.times += 1
        duration = min(self.config.base_ejection * 2 ** (record.times - 1),
                       self.config.max_ejection)
        record.until = now + duration
        event = Ejection(key, record.until, record.times, reason)
        for listener in self.listeners:
            listener(event)
        return event

    def answered(self, key: str, now: float) -> None:
        """A call to ``key`` was answered: once its ejection is over, it is forgiven."""
        record = self._records.get(key)
        if record is not None and now >= record.until:
            del self._records[key]

    def forget(self, key: str) -> None:
        """``key`` left the registry: drop what was known of it."""
        self._records.pop(key, None)
