"""A retry budget (v3.2): retries limited to a share of recent calls, so failures do not multiply.

Retrying a failed call on another provider hides one provider's trouble from the caller. But when
*every* provider is in trouble, say overloaded, each failed call that is retried twice sends
three calls where one was sent before: the retries triple the load on a cluster that is already
failing, and it never recovers (a *retry storm*). A budget caps retries at a fraction of the
calls made recently, plus a small floor for quiet clients, as Finagle's ``RetryBudget`` and
gRPC's retry throttling do:

    retries allowed in the last ``ttl`` seconds
        = ``min_per_second`` x ``ttl``  +  ``ratio`` x (calls made in the last ``ttl`` seconds)

With the defaults (20 % of the calls, 10 retries a second at least, over 10 s), a client making
1,000 calls a second may retry 200 of them a second; when everything fails, it sends at most
1.2 calls per call instead of 3.

The budget keeps its counts in one-second buckets, so its memory is ``ttl`` pairs of integers
whatever the call rate, and it is driven with the current time by its caller (no clock inside).
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RetryBudget"]


class RetryBudget:
    """How many retries the calls of the last ``ttl`` seconds have earned.

    Args:
        ttl: seconds a call's deposit (and a retry's withdrawal) counts.
        min_per_second: retries allowed per second even without calls.
        ratio: retries earned per call.
        now: the current time.
    """

    def __init__(self, *, ttl: int = 10, min_per_second: float = 10.0, ratio: float = 0.2,
                 now: float) -> None:
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be an int >= 1, got {ttl!r}")
        if not (math.isfinite(min_per_second) and min_per_second >= 0
                and math.isfinite(ratio) and 0 <= ratio <= 1):
            raise ValueError("min_per_second must be >= 0 and ratio between 0 and 1")
        self.ttl = ttl
        self.min_per_second = min_per_second
        self.ratio = ratio
        # [second, calls, retries], oldest first, at most ttl of them
        self._buckets: deque[list[int]] = deque()
        self._expire(now)

    def deposit(self, now: float) -> None:
        """A call was made (the first attempt, not a retry)."""
        self._bucket(now)[1] += 1

    def try_withdraw(self, now: float) -> bool:
        """May one retry be made now? True takes it from the budget."""
        if self.available(now) < 1:
            return False
        self._bucket(now)[2] += 1
        return True

    def available(self, now: float) -> float:
        """Retries the budget still allows now."""
        self._expire(now)
        calls = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        return self.min_per_second * self.ttl + self.ratio * calls - retries

    def _bucket(self, now: float) -> list[int]:
        self._expire(now)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def _expire(self, now: float) -> None:
        oldest = math.floor(now) - self.ttl + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
