"""Circuit breaking (v3.2): stop calling a provider that keeps failing, and give it time to heal.

A provider that fails every call still costs its callers: each call waits for a timeout or an
error, and the provider, already struggling, gets no rest. A *circuit breaker* sits in front of
it and counts. When too many recent calls failed, or were too slow, it **opens**: calls are
refused at once, without being sent, for a while. Then it lets a few **trial** calls through
(**half-open**); if they succeed it **closes** again, if not it opens for another while::

                 failure or slow-call rate over threshold
        CLOSED ─────────────────────────────────────────────▶ OPEN
          ▲          (window full, minimum calls reached)       │
          │                                                     │ wait_duration passed
          │ trial calls succeed                                 ▼ (on the next call)
          └──────────────────────────────────────────────── HALF_OPEN
                          trial calls fail, or one hangs ──▶ OPEN

The rules are Resilience4j's, which documents them precisely:

* the rates are computed over a **sliding window** of the last ``window_size`` calls
  (``window="count"``) or of the calls of the last ``window_size`` seconds (``window="time"``),
  and only once ``minimum_calls`` are in it: two failures out of two calls prove nothing;
* a call is **slow** when it takes ``slow_call_duration`` or longer, failed or not;
* in HALF_OPEN exactly ``half_open_calls`` trial calls are let through, and the rest refused;
  the verdict comes when all of them have reported;
* a trial call that does not report within ``half_open_max_wait`` counts as failed. Without
  this, one hanging trial call would hold the breaker in HALF_OPEN for ever (a known complaint
  about Resilience4j, whose half-open state has no time limit by default).

Like :class:`~stages.v2_1.heartbeat.Heartbeat`, the breaker does no I/O and reads no clock: it is
driven with the current time (``now``) by its caller, so it can be tested case by case with a
fake clock, and every state change is handed to listeners as a :class:`Transition` event.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from stages.v1_0.config import check_positive
from stages.v3_x.errors import ConfigError

__all__ = ["State", "BreakerConfig", "CircuitBreaker", "Transition", "Metrics"]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    """When a breaker opens, and how it tries again.

    Attributes:
        window: ``"count"`` (the last ``window_size`` calls) or ``"time"`` (the calls of the
            last ``window_size`` seconds).
        window_size: calls, or seconds.
        minimum_calls: calls the window must hold before a rate is computed.
        failure_rate: percentage of failed calls at or above which the breaker opens.
        slow_call_rate: percentage of slow calls at or above which the breaker opens.
        slow_call_duration: seconds from which a call counts as slow.
        wait_duration: seconds the breaker stays OPEN before trying again.
        half_open_calls: trial calls let through in HALF_OPEN.
        half_open_max_wait: seconds a trial call may take to report before it counts as failed.
    """

    window: Literal["count", "time"] = "count"
    window_size: int = 20
    minimum_calls: int = 10
    failure_rate: float = 50.0
    slow_call_rate: float = 100.0
    slow_call_duration: float = 1.0
    wait_duration: float = 5.0
    half_open_calls: int = 3
    half_open_max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise ConfigError(f"BreakerConfig.window must be 'count' or 'time', got "
                              f"{self.window!r}")
        for name in ("window_size", "minimum_calls", "half_open_calls"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"BreakerConfig.{name} must be an int >= 1, got {value!r}")
        check_positive(self, "slow_call_duration", "wait_duration", "half_open_max_wait",
                       "failure_rate", "slow_call_rate")
        for name in ("failure_rate", "slow_call_rate"):
            if getattr(self, name) > 100:
                raise ConfigError(f"BreakerConfig.{name} is a percentage: at most 100")


@dataclass(frozen=True)
class Transition:
    """A state change, as listeners receive it."""

    name: str
    old: State
    new: State
    at: float
    reason: str


@dataclass(frozen=True)
class Metrics:
    """What the window holds now."""

    calls: int
    failed: int
    slow: int
    not_permitted: int

    @property
    def failure_rate(self) -> float:
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return 100.0 * self.slow / self.calls if self.calls else 0.0


@dataclass
class _Window:
    """Outcomes of recent calls: ``(time, failed, slow)``, oldest first, and their totals.

    The totals change as outcomes enter and leave, so reading them costs the same however many
    calls the window holds (Resilience4j keeps a "total aggregation" for the same reason): a
    time window of 10 s on a client making 20,000 calls a second holds 200,000 outcomes, and
    summing them on every call would cost more than the call.
    """

    config: BreakerConfig
    outcomes: deque[tuple[float, bool, bool]] = field(default_factory=deque)
    failed: int = 0
    slow: int = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        self.outcomes.append((now, failed, slow))
        self.failed += failed
        self.slow += slow
        self.expire(now)

    def expire(self, now: float) -> None:
        outcomes = self.outcomes
        if self.config.window == "count":
            while len(outcomes) > self.config.window_size:
                self._drop()
        else:
            while outcomes and outcomes[0][0] <= now - self.config.window_size:
                self._drop()

    def _drop(self) -> None:
        _, failed, slow = self.outcomes.popleft()
        self.failed -= failed
        self.slow -= slow

    def counts(self) -> tuple[int, int, int]:
        return len(self.outcomes), self.failed, self.slow


class CircuitBreaker:
    """One breaker (the client keeps one per provider and method).

    Use::

        if breaker.try_acquire(now):
            ...make the call...
            breaker.on_result(failed, seconds, now)   # or breaker.release(now) if not made
        else:
            ...refused at once: CircuitOpenError...

    Args:
        name: for events and messages (``"127.0.0.1:9000 get_user"``).
        config: thresholds and durations.
        now: the current time, from the clock later passed to the other methods.
    """

    def __init__(self, name: str, config: BreakerConfig | None = None, *, now: float) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.state = State.CLOSED
        self.opened_at = now
        self.not_permitted = 0
        self.listeners: list[Callable[[Transition], None]] = []
        self._window = _Window(self.config)
        self._trials_out: list[float] = []  # when each trial call in flight was let through
        self._trials_done = 0
        self._trials_failed = 0

    # -- asking and reporting --------------------------------------------------------------------

    def try_acquire(self, now: float) -> bool:
        """May a call go out now? A True must be followed by :meth:`on_result` or
        :meth:`release`."""
        if self.state is State.OPEN and now >= self.opened_at + self.config.wait_duration:
            self._move(State.HALF_OPEN, now, f"{self.config.wait_duration:g} s passed")
        if self.state is State.HALF_OPEN:
            self._expire_trials(now)
        if self.state is State.CLOSED:
            return True
        if self.state is State.HALF_OPEN and \
                len(self._trials_out) + self._trials_done < self.config.half_open_calls:
            self._trials_out.append(now)
            return True
        self.not_permitted += 1
        return False

    def permits(self, now: float) -> bool:
        """Whether :meth:`try_acquire` could say yes now (it changes nothing): not OPEN, or
        OPEN long enough to try again."""
        return self.state is not State.OPEN or now >= self.opened_at + self.config.wait_duration

    def on_result(self, failed: bool, seconds: float, now: float) -> None:
        """Report a permitted call's outcome: ``failed`` or not, after ``seconds``."""
        slow = seconds >= self.config.slow_call_duration
        if self.state is State.HALF_OPEN:
            if not self._trials_out:
                return  # a trial that was already counted as failed (it hung) reports late
            self._forget_trial(now - seconds)
            self._trials_done += 1
            self._trials_failed += failed or slow
            self._judge_trials(now)
        elif self.state is State.CLOSED:
            self._window.add(now, failed, slow)
            self._judge_window(now)
        # OPEN: a call let through before the breaker opened reports; it changes nothing.

    def release(self, now: float) -> None:
        """A permitted call was not made after all: give its permit back."""
        if self.state is State.HALF_OPEN and self._trials_out:
            self._forget_trial(now)

    def metrics(self, now: float) -> Metrics:
        self._window.expire(now)
        calls, failed, slow = self._window.counts()
        return Metrics(calls, failed, slow, self.not_permitted)

    # -- the verdicts ------------------------------------------------------------------------------

    def _judge_window(self, now: float) -> None:
        # The window's own counts, not metrics(): this runs after every call, and building a
        # Metrics object each time was a third of its cost.
        calls, failed, slow = self._window.counts()
        needed = self.config.minimum_calls
        if self.config.window == "count":  # a window of 5 calls never holds 10
            needed = min(needed, self.config.window_size)
        if calls < needed:
            return
        if 100.0 * failed / calls >= self.config.failure_rate:
            self._open(now, f"failure rate {100.0 * failed / calls:.0f}% of {calls} calls")
        elif 100.0 * slow / calls >= self.config.slow_call_rate:
            self._open(now, f"slow-call rate {100.0 * slow / calls:.0f}% of {calls} calls")

    def _judge_trials(self, now: float) -> None:
        if self._trials_failed:
            self._open(now, f"{self._trials_failed} of the trial calls failed or were slow")
        elif self._trials_done >= self.config.half_open_calls:
            self._move(State.CLOSED, now, f"{self._trials_done} trial calls succeeded")

    def _forget_trial(self, started: float) -> None:
        """The trial that started at ``started`` reported: take it out of those in flight (the
        others keep their own start times, so a hanging one is still found)."""
        trials = self._trials_out
        del trials[min(range(len(trials)), key=lambda i: abs(trials[i] - started))]

    def _expire_trials(self, now: float) -> None:
        limit = now - self.config.half_open_max_wait
        if self._trials_out and self._trials_out[0] <= limit:
            self._open(now, f"a trial call did not report within "
                       f"{self.config.half_open_max_wait:g} s")

    def _open(self, now: float, reason: str) -> None:
        self.opened_at = now
        self._move(State.OPEN, now, reason)

    def _move(self, new: State, now: float, reason: str) -> None:
        old, self.state = self.state, new
        # Every state starts afresh: the window's old outcomes belong to the old state.
        self._window = _Window(self.config)
        self._trials_out, self._trials_done, self._trials_failed = [], 0, 0
        event = Transition(self.name, old, new, now, reason)
        for listener in list(self.listeners):
            listener(event)
