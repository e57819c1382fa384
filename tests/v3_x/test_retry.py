"""The retry budget with a fake clock: the floor, the share of calls, and time forgetting both."""

from __future__ import annotations

import pytest

from stages.v3_x.retry import RetryBudget


def test_a_quiet_client_may_still_retry_up_to_the_floor() -> None:
    budget = RetryBudget(ttl=10, min_per_second=1.0, ratio=0.2, now=0.0)
    assert [budget.try_withdraw(0.5) for _ in range(11)] == [True] * 10 + [False]


def test_retries_are_a_share_of_the_calls_made() -> None:
    budget = RetryBudget(ttl=10, min_per_second=0.0, ratio=0.2, now=0.0)
    for _ in range(100):
        budget.deposit(1.0)
    assert sum(budget.try_withdraw(1.5) for _ in range(50)) == 20  # 20 % of 100


def test_when_everything_fails_the_budget_caps_the_amplification() -> None:
    # Every call fails and the caller would retry each twice: with the budget, the cluster sees
    # at most (1 + ratio) calls per call, plus the floor.
    budget = RetryBudget(ttl=10, min_per_second=10.0, ratio=0.2, now=0.0)
    sent = 0
    for i in range(10_000):  # 1,000 calls a second for 10 s
        now = i / 1000
        budget.deposit(now)
        sent += 1
        for _ in range(2):
            if budget.try_withdraw(now):
                sent += 1
    assert sent / 10_000 <= 1.2 + 100 / 10_000
    assert sent / 10_000 > 1.19


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    budget = RetryBudget(ttl=2, min_per_second=0.0, ratio=1.0, now=0.0)
    for _ in range(5):
        budget.deposit(0.0)
    assert budget.available(1.9) == 5
    assert budget.available(2.0) == 0  # the second of time 0 has left the 2 s window
    budget.deposit(3.0)
    assert budget.try_withdraw(3.2) and not budget.try_withdraw(3.3)
    assert budget.available(5.0) == 0 and budget.available(4.0) == 0


@pytest.mark.parametrize("bad", [{"ttl": 0}, {"ratio": 1.5}, {"min_per_second": float("nan")}])
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(now=0.0, **bad)  # type: ignore[arg-type]
