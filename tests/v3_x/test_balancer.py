"""The balancers as pure logic: seeded randomness, a fake clock, exact expectations."""

from __future__ import annotations

import collections
import random

import pytest

from stages.v3_x.balancer import (
    STRATEGIES,
    Candidate,
    ConsistentHashBalancer,
    LeastActiveBalancer,
    P2CBalancer,
    PeakEwma,
    RandomBalancer,
    RoundRobinBalancer,
    WeightedRandomBalancer,
    make_balancer,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shares(balancer: object, candidates: list[Candidate], picks: int = 20_000) -> dict[str, float]:
    counts = collections.Counter(balancer.pick(candidates).key  # type: ignore[attr-defined]
                                 for _ in range(picks))
    return {key: counts[key] / picks for key in (c.key for c in candidates)}


def test_weighted_random_follows_the_weights_within_tolerance() -> None:
    candidates = [Candidate("a", 10), Candidate("b", 20), Candidate("c", 70)]
    got = shares(WeightedRandomBalancer(random.Random(7)), candidates)
    for candidate, expected in zip(candidates, (0.1, 0.2, 0.7)):
        assert abs(got[candidate.key] - expected) < 0.015, got
    # Weight 0 takes a provider out of rotation.
    candidates.append(Candidate("d", 0))
    assert shares(WeightedRandomBalancer(random.Random(7)), candidates, 5000)["d"] == 0


def test_random_is_uniform_and_ignores_weights() -> None:
    got = shares(RandomBalancer(random.Random(3)), [Candidate("a", 1), Candidate("b", 99)])
    assert abs(got["a"] - 0.5) < 0.015


def test_smooth_round_robin_spreads_a_heavy_provider_evenly() -> None:
    candidates = [Candidate("a", 5), Candidate("b", 1), Candidate("c", 1)]
    balancer = RoundRobinBalancer()
    picks = "".join(balancer.pick(candidates).key for _ in range(14))
    assert picks == "aabacaa" * 2  # nginx's sequence: never five a's in a row


def test_least_active_prefers_the_provider_with_fewest_calls_in_flight() -> None:
    candidates = [Candidate("a", active=3), Candidate("b", active=1), Candidate("c", active=2)]
    balancer = LeastActiveBalancer(random.Random(1))
    assert {balancer.pick(candidates).key for _ in range(100)} == {"b"}
    candidates[0].active = 1  # a tie: both are chosen, by weight
    assert {balancer.pick(candidates).key for _ in range(200)} == {"a", "b"}


def test_consistent_hashing_keeps_a_key_on_its_provider_and_moves_about_one_in_n() -> None:
    five = [Candidate(f"10.0.0.{i}:9000") for i in range(5)]
    balancer = ConsistentHashBalancer()
    before = {user: balancer.pick(five, (user,)).key for user in range(10_000)}
    assert all(balancer.pick(five, (user,)).key == before[user] for user in range(0, 10_000, 97))
    gone = five[2].key
    after = {user: balancer.pick(five[:2] + five[3:], (user,)).key for user in range(10_000)}
    moved = [user for user in before if before[user] != after[user]]
    # Only the keys of the provider that left move, and they are about 1/5 of all keys.
    assert all(before[user] == gone for user in moved)
    assert 0.15 < len(moved) / 10_000 < 0.25, len(moved)


def test_p2c_never_sends_to_a_slow_provider_while_a_fast_one_is_paired_with_it() -> None:
    clock = FakeClock()
    fast = [Candidate(f"fast{i}", latency=PeakEwma(clock=clock)) for i in range(2)]
    slow = Candidate("slow", latency=PeakEwma(clock=clock))
    for candidate in fast:
        candidate.latency.observe(0.001)
    slow.latency.observe(0.200)
    got = shares(P2CBalancer(random.Random(5)), [*fast, slow], 3000)
    assert got["slow"] == 0 and abs(got["fast0"] - 0.5) < 0.05
    # Calls in flight count too: a fast provider with many calls pending costs more.
    fast[0].active = fast[1].active = 500
    assert shares(P2CBalancer(random.Random(5)), [*fast, slow], 3000)["slow"] > 0.5


def test_peak_ewma_jumps_to_a_slow_sample_and_decays_back_with_time() -> None:
    clock = FakeClock()
    ewma = PeakEwma(tau=10.0, initial=0.001, clock=clock)
    ewma.observe(0.5)
    assert ewma.value == 0.5  # a peak is taken at once
    clock.now = 10.0  # one time constant later, a fast sample
    ewma.observe(0.001)
    assert 0.5 * 0.36 < ewma.value < 0.5 * 0.38  # e**-1 of the peak is left
    clock.now = 100.0
    ewma.observe(0.001)
    assert ewma.value < 0.0011


def test_every_strategy_has_a_name_and_an_unknown_one_is_refused() -> None:
    assert set(STRATEGIES) == {"random", "weighted", "round_robin", "least_active",
                               "consistent_hash", "p2c"}
    for name in STRATEGIES:
        assert make_balancer(name).pick([Candidate("only")]).key == "only"
    with pytest.raises(ValueError, match="unknown load-balancing strategy 'fastest'"):
        make_balancer("fastest")


def test_an_idle_provider_s_estimate_decays_so_p2c_tries_it_again_in_time() -> None:
    # One slow sample and then no calls: no new sample would ever lower the estimate, and the
    # provider would be avoided for good. Read now, the estimate decays with idle time.
    clock = FakeClock()
    fast = Candidate("fast", latency=PeakEwma(tau=10.0, clock=clock))
    healed = Candidate("healed", latency=PeakEwma(tau=10.0, clock=clock))
    healed.latency.observe(0.25)
    fast.latency.observe(0.002)
    assert shares(P2CBalancer(random.Random(1)), [fast, healed], 2000)["healed"] == 0
    clock.now = 60.0  # a minute later; the fast one was just measured again
    fast.latency.observe(0.002)
    assert healed.latency.current() < 0.25 * 0.003
    assert shares(P2CBalancer(random.Random(1)), [fast, healed], 2000)["healed"] > 0.3
