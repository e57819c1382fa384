"""The circuit breaker case by case, with a fake clock (no sleeping).

The first cases follow Resilience4j's CircuitBreakerStateMachineTest: a window of 5 calls, a
failure threshold of 50 %, 4 trial calls in HALF_OPEN, a 5 s wait.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v3_x.breaker import BreakerConfig, CircuitBreaker, Metrics, State, Transition
from stages.v3_x.errors import ConfigError

R4J = BreakerConfig(window="count", window_size=5, minimum_calls=5, failure_rate=50,
                    slow_call_rate=100, slow_call_duration=1.0, wait_duration=5.0,
                    half_open_calls=4, half_open_max_wait=2.0)


def breaker(config: BreakerConfig = R4J) -> tuple[CircuitBreaker, list[Transition]]:
    events: list[Transition] = []
    b = CircuitBreaker("p1 get_user", config, now=0.0)
    b.listeners.append(events.append)
    return b, events


def call(b: CircuitBreaker, now: float, failed: bool, seconds: float = 0.01) -> bool:
    if not b.try_acquire(now):
        return False
    b.on_result(failed, seconds, now)
    return True


def test_it_opens_exactly_when_the_window_is_full_and_the_rate_is_reached() -> None:
    b, events = breaker()
    for failed in (True, True, True, False):  # 3 of 4 failed: 75 %, but 4 < minimum 5
        assert call(b, 1.0, failed)
        assert b.state is State.CLOSED
    assert call(b, 1.0, False)  # the 5th call: 3 of 5, 60 % >= 50 %
    assert b.state is State.OPEN
    assert [(e.old, e.new) for e in events] == [(State.CLOSED, State.OPEN)]
    assert "failure rate 60% of 5 calls" in events[0].reason


def test_just_under_the_threshold_it_stays_closed() -> None:
    b, _ = breaker()
    for failed in (True, True, False, False, False, False):  # at most 2 of 5: 40 %
        call(b, 1.0, failed)
    assert b.state is State.CLOSED
    b2, _ = breaker(BreakerConfig(window="count", window_size=4, minimum_calls=4,
                                  failure_rate=50, wait_duration=5.0))
    for failed in (True, True, False, False):  # exactly 50 %: at the threshold it opens
        call(b2, 1.0, failed)
    assert b2.state is State.OPEN


def test_open_refuses_at_once_and_counts_it() -> None:
    b, _ = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert b.state is State.OPEN
    assert not b.try_acquire(2.0) and not b.try_acquire(3.0)
    assert b.metrics(3.0).not_permitted == 2


def test_half_open_comes_only_after_the_wait_and_with_fresh_metrics() -> None:
    b, events = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert not b.try_acquire(4.0)  # +3 s: still OPEN
    assert b.state is State.OPEN
    assert b.try_acquire(6.0)  # +5 s: the next call is a trial
    assert b.state is State.HALF_OPEN and b.metrics(6.0).calls == 0
    assert [(e.old, e.new) for e in events][-1] == (State.OPEN, State.HALF_OPEN)


def test_half_open_lets_exactly_the_trial_calls_through_and_a_release_frees_one() -> None:
    b, _ = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert [b.try_acquire(6.0) for _ in range(5)] == [True, True, True, True, False]
    b.release(6.0)
    assert b.try_acquire(6.0) and not b.try_acquire(6.0)


def test_successful_trials_close_it_and_one_failed_trial_reopens_it() -> None:
    b, events = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    for _ in range(4):
        assert b.try_acquire(6.0)
    for _ in range(3):
        b.on_result(False, 0.01, 6.5)
        assert b.state is State.HALF_OPEN  # the verdict waits for every trial
    b.on_result(False, 0.01, 6.5)
    assert b.state is State.CLOSED

    b, events = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert b.try_acquire(6.0) and b.try_acquire(6.0)
    b.on_result(True, 0.01, 6.1)
    assert b.state is State.OPEN and b.opened_at == 6.1
    assert not b.try_acquire(10.0) and b.try_acquire(11.2)  # a new full wait


def test_a_hanging_trial_call_cannot_hold_it_half_open() -> None:
    b, events = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert b.try_acquire(6.0)  # a trial that never reports
    assert b.try_acquire(7.9)  # others may still try within half_open_max_wait (2 s)...
    assert not b.try_acquire(8.0)  # ...but at +2 s the hanging one counts as failed
    assert b.state is State.OPEN and "did not report within 2 s" in events[-1].reason
    b.on_result(False, 5.0, 9.0)  # it reports, late: nothing changes
    assert b.state is State.OPEN


def test_slow_calls_open_it_too() -> None:
    config = BreakerConfig(window="count", window_size=5, minimum_calls=5, failure_rate=50,
                           slow_call_rate=60, slow_call_duration=1.0, wait_duration=5.0)
    b, events = breaker(config)
    for seconds in (1.5, 0.1, 2.0, 0.2, 1.0):  # 3 slow of 5 (1.0 counts: "or longer")
        call(b, 1.0, False, seconds)
    assert b.state is State.OPEN and "slow-call rate 60%" in events[-1].reason


def test_a_count_window_forgets_the_oldest_calls() -> None:
    b, _ = breaker()
    for failed in (True, True, False, False, False, False, False):
        call(b, 1.0, failed)  # the window holds the last five: no failure left in it
    assert b.metrics(1.0).failed == 0 and b.state is State.CLOSED


def test_a_time_window_forgets_calls_older_than_its_size() -> None:
    config = BreakerConfig(window="time", window_size=10, minimum_calls=4, failure_rate=50,
                           wait_duration=5.0)
    b, _ = breaker(config)
    for t in (0.0, 1.0, 2.0):
        call(b, t, True)  # 3 failures, but under the minimum of 4 calls
    assert b.state is State.CLOSED
    call(b, 12.5, False)  # 10 s later the three failures have left the window
    assert b.metrics(12.5).calls == 1 and b.state is State.CLOSED
    for t in (13.0, 13.5, 14.0):
        call(b, t, True)  # now 3 of 4 in the last 10 s
    assert b.state is State.OPEN


@settings(max_examples=200, deadline=None)
@given(window=st.sampled_from(["count", "time"]), size=st.integers(1, 8),
       outcomes=st.lists(st.tuples(st.floats(0, 3), st.booleans(), st.floats(0, 2)),
                         max_size=60))
def test_the_window_totals_are_the_counts_of_the_outcomes_it_holds(
        window: str, size: int, outcomes: list[tuple[float, bool, float]]) -> None:
    # The totals are kept as outcomes come and go, not summed: they must never drift.
    config = BreakerConfig(window=window, window_size=size, minimum_calls=1,  # type: ignore[arg-type]
                           failure_rate=100, slow_call_rate=100, slow_call_duration=1.0)
    b, _ = breaker(config)
    now = 0.0
    for step, failed, seconds in outcomes:
        now += step
        b.on_result(failed, seconds, now)
        if b.state is not State.CLOSED:
            return  # a new state starts a new window
        held = b._window.outcomes
        assert b.metrics(now) == Metrics(len(held), sum(f for _, f, _ in held),
                                         sum(s for _, _, s in held), 0)


@pytest.mark.parametrize("bad", [
    {"window": "sliding"}, {"window_size": 0}, {"minimum_calls": 1.5},
    {"failure_rate": 0}, {"failure_rate": 101}, {"wait_duration": float("nan")},
    {"half_open_max_wait": float("inf")},
])
def test_a_bad_setting_is_refused_when_the_config_is_built(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BreakerConfig(**bad)  # type: ignore[arg-type]


def test_each_trial_reports_for_itself_so_a_hanging_one_is_still_found() -> None:
    # Two trials: the first hangs, the second answers. The answer must not be taken for the
    # first one's, or the hanging trial would go unnoticed until the second one's time.
    b, events = breaker()
    for _ in range(5):
        call(b, 1.0, True)
    assert b.try_acquire(10.0)  # hangs
    assert b.try_acquire(11.0)
    b.on_result(False, 0.2, 11.2)  # the second trial answers after 0.2 s
    assert b.state is State.HALF_OPEN
    assert not b.try_acquire(12.0)  # 2 s after the first trial: it counts as failed
    assert b.state is State.OPEN and events[-1].at == 12.0
