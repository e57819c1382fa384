"""Client-side load balancing (v3.1): which provider takes the next call.

A consumer that knows several providers of an interface chooses one for every call. Each
strategy here answers the question differently; all of them are pure logic, with no I/O: they
get the candidates (with what the client measured about each) and return one. Randomness comes
from an injected :class:`random.Random`, time from an injected clock, so tests and notebooks are
repeatable.

==================  ===========================================================================
strategy            chooses
==================  ===========================================================================
``random``          any provider, uniformly
``weighted``        at random, in proportion to the providers' weights
``round_robin``     in turn, in proportion to the weights, evenly spread (nginx's *smooth*
                    weighted round robin: weights 5, 1, 1 give a a b a c a a, not a a a a a b c)
``least_active``    the provider with the fewest calls in flight (ties: weighted random). A slow
                    provider keeps calls longer, so it gets fewer new ones (Dubbo's leastactive)
``consistent_hash`` the provider that owns the hash of chosen arguments on a ring of virtual
                    nodes: the same user id always goes to the same provider, and when one of N
                    providers leaves, only about 1/N of the keys move
``p2c``             two providers at random, then the one whose expected cost, peak-EWMA latency
                    times (calls in flight + 1), is lower: Finagle's default. It reacts to a slow
                    provider within a few calls and costs O(1) per call
==================  ===========================================================================

:class:`Candidate` holds what the client measures: calls in flight and a peak-EWMA latency. The
client updates it around every call (``started``/``finished``).
"""

from __future__ import annotations

import abc
import bisect
import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "Candidate", "Balancer", "RandomBalancer", "WeightedRandomBalancer",
    "RoundRobinBalancer", "LeastActiveBalancer", "ConsistentHashBalancer", "P2CBalancer",
    "STRATEGIES", "make_balancer", "PeakEwma",
]


class PeakEwma:
    """A latency estimate that jumps up to a slow sample at once and decays back slowly.

    An exponentially weighted moving average forgets old samples with a time constant ``tau``:
    a sample taken ``dt`` seconds after the last counts with weight ``1 - exp(-dt/tau)``. The
    *peak* variant takes a sample larger than the estimate as the new estimate outright, so a
    provider that turns slow is avoided after one slow call, and trusted again only gradually.

    Args:
        tau: the decay time constant, in seconds.
        initial: the estimate before any sample (seconds).
        clock: the time source.
    """

    __slots__ = ("tau", "value", "stamp", "clock")

    def __init__(self, tau: float = 10.0, initial: float = 0.001,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tau = tau
        self.value = initial
        self.clock = clock
        self.stamp = clock()

    def current(self) -> float:
        """The estimate now: it decays toward zero while no sample arrives, so that a provider
        that was slow once, and then got no calls, is tried again in time (as Finagle's does).
        Without this, one slow sample would keep a provider out of power-of-two choices for
        good: no call, no new sample, no change."""
        idle = max(self.clock() - self.stamp, 0.0)
        return self.value * math.exp(-idle / self.tau)

    def observe(self, sample: float) -> None:
        now = self.clock()
        if sample > self.value:
            self.value = sample
        else:
            decay = math.exp(-max(now - self.stamp, 0.0) / self.tau)
            self.value = self.value * decay + sample * (1.0 - decay)
        self.stamp = now


@dataclass(eq=False)
class Candidate:
    """One provider as a balancer sees it.

    Attributes:
        key: ``host:port``.
        weight: its relative share (from its registry entry).
        active: calls sent to it and not yet answered.
        latency: its peak-EWMA latency.
        calls: calls it has finished.
    """

    key: str
    weight: int = 100
    active: int = 0
    latency: PeakEwma = field(default_factory=PeakEwma)
    #: Calls it has finished (answered or failed), for the curious.
    calls: int = 0

    def started(self) -> None:
        self.active += 1

    def finished(self, seconds: float | None) -> None:
        """A call ended after ``seconds``; None: its time says nothing of the provider (it
        included opening the connection), and the latency estimate is left alone."""
        self.active -= 1
        self.calls += 1
        if seconds is not None:
            self.latency.observe(seconds)


class Balancer(abc.ABC):
    """Chooses a provider for a call.

    Args:
        rng: the source of randomness (seed it for repeatable choices).
    """

    name: str

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    @abc.abstractmethod
    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        """One of ``candidates`` (never empty) for a call with arguments ``args``."""


class RandomBalancer(Balancer):
    name = "random"

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        return candidates[self.rng.randrange(len(candidates))]


class WeightedRandomBalancer(Balancer):
    name = "weighted"

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        return _weighted_choice(candidates, self.rng)


def _weighted_choice(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    total = sum(c.weight for c in candidates)
    if total <= 0:  # every weight 0: nobody asked for traffic, but someone must take it
        return candidates[rng.randrange(len(candidates))]
    point = rng.random() * total
    for candidate in candidates:
        point -= candidate.weight
        if point < 0:
            return candidate
    return candidates[-1]


class RoundRobinBalancer(Balancer):
    """Smooth weighted round robin: each pick adds every weight to its candidate's running
    score, takes the highest score, and subtracts the total from it."""

    name = "round_robin"

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(rng)
        self._scores: dict[str, int] = {}

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        scores = self._scores
        if scores.keys() != {c.key for c in candidates}:  # providers came or went: start afresh
            self._scores = scores = {c.key: 0 for c in candidates}
        total = 0
        best = candidates[0]
        for candidate in candidates:
            weight = max(candidate.weight, 0)
            total += weight
            scores[candidate.key] += weight
            if scores[candidate.key] > scores[best.key]:
                best = candidate
        scores[best.key] -= total
        return best


class LeastActiveBalancer(Balancer):
    name = "least_active"

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        fewest = min(c.active for c in candidates)
        return _weighted_choice([c for c in candidates if c.active == fewest], self.rng)


class ConsistentHashBalancer(Balancer):
    """A ring of ``replicas`` virtual nodes per provider; a call goes to the first virtual node
    at or after the hash of its key arguments.

    Args:
        replicas: virtual nodes per provider (Dubbo uses 160). More spread the keys more evenly.
        key_args: positions of the arguments that form the key (the first one by default).
    """

    name = "consistent_hash"

    def __init__(self, rng: random.Random | None = None, *, replicas: int = 160,
                 key_args: tuple[int, ...] = (0,)) -> None:
        super().__init__(rng)
        self.replicas = replicas
        self.key_args = key_args
        self._members: frozenset[str] = frozenset()
        self._ring: list[int] = []
        self._owners: list[str] = []

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        members = frozenset(c.key for c in candidates)
        if members != self._members:
            self._build(members)
        key = "|".join(repr(args[i]) for i in self.key_args if i < len(args))
        index = bisect.bisect_left(self._ring, _hash(key)) % len(self._ring)
        owner = self._owners[index]
        return next(c for c in candidates if c.key == owner)

    def owner_of(self, key: str) -> str:
        """The provider a key maps to on the current ring (for measuring how keys move)."""
        return self._owners[bisect.bisect_left(self._ring, _hash(key)) % len(self._ring)]

    def _build(self, members: frozenset[str]) -> None:
        points = sorted((_hash(f"{member}#{i}"), member)
                        for member in members for i in range(self.replicas))
        self._ring = [point for point, _ in points]
        self._owners = [member for _, member in points]
        self._members = members


def _hash(text: str) -> int:
    # A stable hash (Python's own hash() differs from process to process).
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


class P2CBalancer(Balancer):
    """Power of two choices over peak-EWMA cost."""

    name = "p2c"

    def pick(self, candidates: Sequence[Candidate], args: tuple[Any, ...] = ()) -> Candidate:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        return a if _cost(a) <= _cost(b) else b


def _cost(candidate: Candidate) -> float:
    return candidate.latency.current() * (candidate.active + 1)


#: Every strategy, by the name a user gives (``--lb NAME``).
STRATEGIES: Final[dict[str, type[Balancer]]] = {
    cls.name: cls for cls in (RandomBalancer, WeightedRandomBalancer, RoundRobinBalancer,
                              LeastActiveBalancer, ConsistentHashBalancer, P2CBalancer)
}


def make_balancer(name: str, rng: random.Random | None = None) -> Balancer:
    """The balancer called ``name``.

    Raises:
        ValueError: no strategy has that name.
    """
    try:
        return STRATEGIES[name](rng)
    except KeyError:
        raise ValueError(f"unknown load-balancing strategy {name!r} (known: "
                         f"{', '.join(STRATEGIES)})") from None
