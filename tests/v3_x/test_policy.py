"""Call policies against real provider processes: failover, failfast, failsafe, forking,
fallbacks, forced degradation and circuit breakers. The providers are v2.1 server processes
listed in a static registry, so that these tests need no ZooKeeper; one is killed or frozen."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from support import run, until
from zk_support import Load

from stages.harness.process import ServerProcess
from stages.v2_0.user_stub import User, UserApi, UserNotFound
from stages.v3_x import (
    BreakerConfig,
    CallPolicy,
    CircuitOpenError,
    Client,
    ClientConfig,
    RpcError,
    RpcTimeoutError,
    State,
    StaticRegistry,
    Transition,
)
from stages.v3_x.errors import ConfigError, ConnectionClosedError

# The heartbeat declares a silent provider dead after 0.3 s, well within a call's 1 s deadline,
# so that a call sent to a frozen provider fails in time to be sent elsewhere.
NO_BREAKER = ClientConfig(breaker=None, timeout=1.0, heartbeat_interval=0.1)


@contextmanager
def providers(count: int) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        yield [stack.enter_context(ServerProcess("stages.v2_1", ["--min-ping-interval", "0.05"]))
               for _ in range(count)]


def registry(processes: list[ServerProcess]) -> StaticRegistry:
    return StaticRegistry(f"{p.host}:{p.port}" for p in processes)


FAILOVER = CallPolicy(mode="failover", idempotent=True, retries=2)


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_failover_keeps_every_idempotent_call_succeeding_when_one_of_three_fails(
        fault: str) -> None:
    async def scenario() -> None:
        with providers(3) as procs:
            client = Client(registry(procs), NO_BREAKER)
            client.set_policy(UserApi, FAILOVER)
            load = Load(client)
            await until(lambda: load.ok > 300, 10, "calls under way")
            (procs[0].kill if fault == "kill" else procs[0].pause)()
            ok_at_fault = load.ok
            await until(lambda: load.ok > ok_at_fault + 500, 15, "calls after the fault")
            await load.stop()
            if fault == "freeze":
                procs[0].resume()
            assert not load.failed, load.failed
            if fault == "freeze":  # calls sent to it before it was found dead were sent again
                assert client.stats["retries"] >= 1, client.stats
            else:  # a killed one: calls in flight on it (if any) sent again, new ones elsewhere
                assert client.stats["retries"] + client.stats["redirects"] >= 1, client.stats
            await client.aclose()

    run(scenario, 60)


def test_failfast_fails_the_calls_caught_by_a_fault_and_does_not_resend_them() -> None:
    async def scenario() -> None:
        with providers(3) as procs:
            client = Client(registry(procs), NO_BREAKER)
            load = Load(client)
            await until(lambda: load.ok > 300, 10, "calls under way")
            procs[0].pause()  # frozen: calls sent to it time out
            await until(lambda: sum(load.failed.values()) > 0, 10, "a failed call")
            await load.stop()
            procs[0].resume()
            assert set(load.failed) <= {"RpcTimeoutError", "ConnectionClosedError"}, load.failed
            assert client.stats["retries"] == 0
            await client.aclose()

    run(scenario, 60)


def test_failover_and_forking_need_an_idempotent_method() -> None:
    for mode in ("failover", "forking"):
        with pytest.raises(ConfigError, match="needs idempotent=True"):
            CallPolicy(mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="force_fallback needs a fallback"):
        CallPolicy(force_fallback=True)


class MockUsers(UserApi):
    """A local mock implementation: what callers get while the real one is unreachable."""

    def get_user(self, user_id: int) -> User:
        return User(user_id, "(cached)", "")

    def find_users(self, prefix: str, *, limit: int = 10) -> list[User]:
        return []


def test_forced_degradation_calls_no_provider_at_all() -> None:
    async def scenario() -> None:
        with providers(1) as procs:
            client = Client(registry(procs), NO_BREAKER)
            client.set_policy(UserApi, CallPolicy(fallback=MockUsers().get_user,
                                                  force_fallback=True), method="get_user")
            users = client.async_proxy(UserApi)
            assert [(await users.get_user(i)).name for i in (1, 2)] == ["(cached)"] * 2
            assert client.connects == 0 and client.stats["forced fallbacks"] == 2
            assert await users.find_users("A", limit=1)  # the other method is not degraded
            assert client.connects == 1
            await client.aclose()

    run(scenario, 30)


def test_a_fallback_answers_transport_failures_but_not_the_methods_own_exceptions() -> None:
    async def scenario() -> None:
        with providers(1) as procs:
            client = Client(registry(procs), NO_BREAKER)
            client.set_policy(UserApi, CallPolicy(fallback=MockUsers().get_user),
                              method="get_user")
            users = client.async_proxy(UserApi)
            assert (await users.get_user(7)).name != "(cached)"
            with pytest.raises(UserNotFound):
                await users.get_user(0)  # the provider's answer: not a failure
            procs[0].pause()
            assert (await users.get_user(7)).name == "(cached)"  # timed out: the fallback
            procs[0].resume()
            assert client.stats["fallbacks"] == 1
            await client.aclose()

    run(scenario, 30)


def test_failsafe_returns_the_default() -> None:
    async def scenario() -> None:
        with providers(1) as procs:
            client = Client(registry(procs), NO_BREAKER)
            client.set_policy(UserApi, CallPolicy(mode="failsafe", default=[]),
                              method="find_users")
            procs[0].kill()
            users = client.async_proxy(UserApi)
            assert await users.find_users("A") == []
            with pytest.raises((ConnectionClosedError, RpcError)):
                await users.get_user(1)  # failfast for the other method
            assert client.stats["failsafe defaults"] == 1
            await client.aclose()

    run(scenario, 30)


def test_forking_takes_the_first_answer_while_one_provider_is_frozen() -> None:
    async def scenario() -> None:
        with providers(2) as procs:
            client = Client(registry(procs), NO_BREAKER)
            client.set_policy(UserApi, CallPolicy(mode="forking", idempotent=True, forks=2))
            users = client.async_proxy(UserApi)
            assert (await users.get_user(3)).id == 3
            procs[0].pause()
            for i in range(5):  # each call goes to both: the live one answers in time
                assert (await users.get_user(10 + i)).id == 10 + i
            procs[0].resume()
            assert client.stats["forks"] == 6
            await client.aclose()

    run(scenario, 30)


def test_a_breaker_opens_on_a_failing_provider_and_calls_go_to_the_others() -> None:
    # Round robin keeps sending the frozen provider its share (p2c would avoid it after one slow
    # call, and outlier detection would set it aside at its first timeout, before any breaker):
    # the breaker is what stops it here.
    config = ClientConfig(timeout=0.2, heartbeat_interval=0.1, balancer="round_robin",
                          breaker=BreakerConfig(window_size=4, minimum_calls=4, failure_rate=50,
                                                wait_duration=30), outlier=None)
    events: list[Transition] = []

    async def scenario() -> None:
        with providers(2) as procs:
            client = Client(registry(procs), config)
            client.breaker_listeners.append(events.append)
            frozen = f"{procs[0].host}:{procs[0].port}"
            procs[0].pause()
            users = client.async_proxy(UserApi)
            results = collections.Counter()
            for i in range(40):
                try:
                    await users.get_user(1 + i)
                    results["ok"] += 1
                except (RpcTimeoutError, ConnectionClosedError):
                    results["timeout"] += 1
            procs[0].resume()
            opened = [e for e in events if e.new is State.OPEN]
            assert opened and opened[0].name == f"{frozen} get_user", events
            # Once open, the frozen provider got no more calls: at most the window's worth of
            # timeouts (the calls that opened it), everything else answered by the other.
            assert results["timeout"] <= 4 and results["ok"] >= 36, results
            assert client.breakers[frozen, "get_user"].state is State.OPEN
            await client.aclose()

    run(scenario, 30)


def test_every_circuit_open_is_refused_at_once_with_a_clear_error() -> None:
    config = ClientConfig(timeout=0.2, heartbeat_interval=0.1, breaker=BreakerConfig(
        window_size=2, minimum_calls=2, failure_rate=50, wait_duration=30))

    async def scenario() -> None:
        with providers(1) as procs:
            client = Client(registry(procs), config)
            procs[0].pause()
            users = client.async_proxy(UserApi)
            for _ in range(2):
                with pytest.raises((RpcTimeoutError, ConnectionClosedError)):
                    await users.get_user(1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(CircuitOpenError, match="circuit of every provider"):
                await users.get_user(1)
            assert loop.time() - started < 0.05  # refused, not waited for
            procs[0].resume()
            await client.aclose()

    run(scenario, 30)


def test_weight_zero_is_out_of_rotation_and_keyword_arguments_hash_like_positional_ones() -> None:
    from stages.v3_x import ConsistentHashBalancer, ProviderInfo

    async def scenario() -> None:
        with providers(3) as procs:
            infos = [ProviderInfo(host=p.host, port=p.port, weight=w)
                     for p, w in zip(procs, (100, 100, 0))]
            client = Client(StaticRegistry(infos), ClientConfig(balancer="random"))
            users = client.async_proxy(UserApi)
            for i in range(60):
                await users.get_user(1 + i)
            view = await client.view(UserApi.__rpc_api__.address)  # type: ignore[attr-defined]
            assert view.candidates[infos[2].key].calls == 0  # weight 0: never chosen
            await client.aclose()

            hashing = Client(registry(procs), ClientConfig(), balancer=ConsistentHashBalancer())
            users = hashing.async_proxy(UserApi)
            view = await hashing.view(UserApi.__rpc_api__.address)  # type: ignore[attr-defined]

            for user in (3, 11, 42):
                before = {k: c.calls for k, c in view.candidates.items()}
                await users.get_user(user)
                by_position = next(k for k, c in view.candidates.items() if c.calls != before[k])
                before = {k: c.calls for k, c in view.candidates.items()}
                await users.get_user(user_id=user)
                by_keyword = next(k for k, c in view.candidates.items() if c.calls != before[k])
                assert by_position == by_keyword, user
            await hashing.aclose()

    run(scenario, 30)
