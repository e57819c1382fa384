"""v3.x's blocking proxy: the calls of blocking proxies make their attempts in the calling thread
(v2.1's direct route, one pool per provider), and share the balancer, breakers, outlier detector,
retry budget and metrics with the calls made on the client's loop, under its ``state_lock``.

What must hold: after an interface's first call no blocking call goes through the loop; the
balancer spreads them; every call and attempt is counted once, whichever thread made it, with
nothing left in flight; a silent provider is found dead by the heartbeat and the call fails over;
an unreachable provider is reported through the loop's endpoint, which backs off and takes it
out of the candidates; a timed-out call is cancelled on the provider; what needs the loop
(forking, interceptors) still goes there. And a call that ends without an outcome (cancelled, or
the loser of a fork) gives back what it held: no candidate stays "in flight" for ever.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from support import wait_until

from stages.harness.faultproxy import FaultProxyThread
from stages.harness.threads import BackgroundServer
from stages.v2_0.user_stub import UserApi
from stages.v2_1.cli import new_server
from stages.v2_1.timer_stub import TimerApi
from stages.v3_x import (
    BreakerConfig,
    CallPolicy,
    Client,
    ClientConfig,
    ProviderInfo,
    RpcTimeoutError,
    State,
    StaticRegistry,
)
from stages.v3_x import deadline as v3_deadline
from stages.v3_x.cli import new_server as new_v3_server
from stages.v3_x.metrics import ClientMetrics

USERS = "walkthrough/stages.v2_0.user_stub.api.UserApi"


@contextmanager
def serving(count: int, factory: Any = new_server) -> Iterator[list[tuple[str, int]]]:
    with ExitStack() as stack:
        yield [stack.enter_context(BackgroundServer(factory)).address for _ in range(count)]


def keys(addresses: list[tuple[str, int]]) -> list[str]:
    return [f"{host}:{port}" for host, port in addresses]


def in_flight(client: Client) -> list[int]:
    """What the balancer believes is in flight, per candidate of every view."""
    return [c.active for view in client.views.values() for c in view.candidates.values()]


def test_after_the_first_call_blocking_calls_run_in_the_callers_thread_across_providers() -> None:
    metrics = ClientMetrics()
    with serving(2) as addresses, metrics.attach(Client(StaticRegistry(keys(addresses)))) as client:
        users = client.proxy(UserApi)
        assert users.get_user(1).id == 1  # the view is read on the loop: a hand-over
        loop_connects = client.connects
        assert loop_connects == 1
        for i in range(1, 201):
            assert users.get_user(i).id == i
        assert client.connects == loop_connects  # no other call went through the loop
        pools = client.direct_pools
        assert set(pools) == set(keys(addresses))  # the balancer chose both
        assert all(pool.connects == 1 for pool in pools.values())  # one thread: one each
        calls = metrics.snapshot()["rpc_client_calls_total"]
        assert calls[(USERS, "get_user", "ok")] == 201
        attempts = metrics.snapshot()["rpc_client_attempts_total"]
        assert sum(attempts[(USERS, key, "ok")] for key in keys(addresses)) == 201
        assert metrics.snapshot()["rpc_client_calls_in_flight"][(USERS,)] == 0
        assert in_flight(client) == [0, 0]


def test_blocking_and_async_calls_share_the_clients_state_without_losing_a_count() -> None:
    threads, per_thread, async_calls = 6, 150, 600
    metrics = ClientMetrics()
    with serving(2) as addresses, metrics.attach(Client(StaticRegistry(keys(addresses)))) as client:
        users = client.proxy(UserApi)
        users.get_user(1)
        aio = client.async_proxy(UserApi)

        async def on_the_loop() -> None:
            await asyncio.gather(*(aio.get_user(i) for i in range(1, async_calls + 1)))

        def blocking() -> None:
            for i in range(1, per_thread + 1):
                assert users.get_user(i).id == i

        with ThreadPoolExecutor(threads + 1) as pool:
            done = [pool.submit(blocking) for _ in range(threads)]
            done.append(pool.submit(client._loop().run, on_the_loop()))
            for future in done:
                future.result(timeout=60)
        total = 1 + threads * per_thread + async_calls
        snap = metrics.snapshot()
        assert snap["rpc_client_calls_total"][(USERS, "get_user", "ok")] == total
        assert sum(snap["rpc_client_attempts_total"].values()) == total
        assert snap["rpc_client_calls_in_flight"][(USERS,)] == 0
        assert in_flight(client) == [0, 0]
        view = client.views[USERS]
        assert sum(c.calls for c in view.candidates.values()) == total
        assert sum(pool.connects for pool in client.direct_pools.values()) <= 2 * threads


def test_a_silent_provider_is_found_dead_by_the_heartbeat_and_the_call_fails_over() -> None:
    # Declared dead after 3 pings unanswered (0.15 s), well within the call's 2 s.
    config = ClientConfig(timeout=2.0, heartbeat_interval=0.05)
    with serving(2) as addresses, FaultProxyThread(addresses[0]) as proxy:
        proxy.blackhole()  # connections open and bytes are taken; nothing comes back
        silent = f"{proxy.address[0]}:{proxy.address[1]}"
        with Client(StaticRegistry([silent, *keys(addresses[1:])]), config) as client:
            client.set_policy(UserApi, CallPolicy(mode="failover", idempotent=True, retries=2))
            users = client.proxy(UserApi)
            errors: list[str | None] = []
            client.attempt_listeners.append(
                lambda a: errors.append(a.error) if a.provider == silent else None)
            for i in range(1, 41):
                assert users.get_user(i).id == i
            assert errors and set(errors) == {"ConnectionClosedError"}, errors
            assert client.stats["retries"] == len(errors)
            assert client.stats["ejections"] >= 1  # set aside: not chosen again at once
            assert len(errors) <= 2
            assert in_flight(client) == [0, 0]


def test_an_unreachable_provider_is_reported_by_the_loop_which_backs_off() -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    gone = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there now: connecting is refused
    with serving(1) as addresses, Client(StaticRegistry([gone, *keys(addresses)])) as client:
        users = client.proxy(UserApi)
        for i in range(1, 51):
            assert users.get_user(i).id == i
        # Each refusal went through the loop's endpoint, whose backoff then kept the provider
        # out of the candidates: a few redirects, not one per call.
        assert 1 <= client.stats["redirects"] <= 3, client.stats
        assert client.endpoints[gone].last_error is not None
        assert gone not in client.direct_pools or client.direct_pools[gone].connects == 0


def test_a_timed_out_blocking_call_is_cancelled_on_a_v3_provider() -> None:
    with BackgroundServer(lambda: new_v3_server(StaticRegistry([]))) as bg:
        host, port = bg.address
        provider = ProviderInfo(host=host, port=port, features=v3_deadline.FEATURES)
        with Client(StaticRegistry([provider])) as client:
            timer = client.proxy(TimerApi, timeout=0.3)
            timer.sleep(0.0)  # the first call reads the view
            server = bg.server
            assert server is not None
            with pytest.raises(RpcTimeoutError, match="within 0.3 s"):
                timer.sleep(5.0)
            wait_until(lambda: server.calls_running == 0, 3, "the provider ends the call")
            pool = client.direct_pools[provider.key]
            assert pool._open == 0  # the timed-out connection was closed, not kept
            timer.sleep(0.0)  # and the next call opens another
            assert pool.connects == 2


def test_forking_calls_go_through_the_loop_and_their_losers_leave_no_call_in_flight() -> None:
    with serving(2) as addresses, Client(StaticRegistry(keys(addresses))) as client:
        client.set_policy(UserApi, CallPolicy(mode="forking", idempotent=True, forks=2))
        users = client.proxy(UserApi)
        for i in range(1, 31):
            assert users.get_user(i).id == i
        assert not client.direct_pools
        assert client.stats["forks"] == 30
        wait_until(lambda: in_flight(client) == [0, 0], 3, "the losers are given back")


def test_a_client_with_interceptors_hands_its_blocking_calls_to_the_loop() -> None:
    seen: list[str] = []

    async def spy(call: Any, proceed: Any) -> Any:
        seen.append(call.method)
        return await proceed(call)

    with serving(1) as addresses, \
            Client(StaticRegistry(keys(addresses)), interceptors=[spy]) as client:
        users = client.proxy(UserApi)
        for i in range(1, 6):
            users.get_user(i)
        assert seen == ["get_user"] * 5
        assert not client.direct_pools


def test_a_cancelled_async_call_gives_back_its_place_with_the_balancer() -> None:
    async def scenario(client: Client) -> None:
        timer = client.async_proxy(TimerApi)
        await timer.sleep(0.0)
        call = asyncio.ensure_future(timer.sleep(5.0))
        while max(in_flight(client)) == 0:
            await asyncio.sleep(0.005)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert in_flight(client) == [0]

    with serving(1) as addresses, Client(StaticRegistry(keys(addresses))) as client:
        client._loop().run(scenario(client))


def test_a_cancelled_trial_call_gives_back_the_half_open_breakers_permit() -> None:
    # One trial call at a time in HALF_OPEN: were the cancelled trial's permit kept, the next
    # call would be refused (CircuitOpenError) until half_open_max_wait, 30 s here.
    breakers = BreakerConfig(window_size=2, minimum_calls=2, wait_duration=0.05,
                             half_open_calls=1, half_open_max_wait=30.0)

    async def scenario(client: Client, key: str) -> None:
        loop = asyncio.get_running_loop()
        breaker = client.breaker(key, "sleep", loop.time())
        assert breaker is not None
        for _ in range(2):  # two failures of two: open
            assert breaker.try_acquire(loop.time())
            breaker.on_result(True, 0.01, loop.time())
        assert breaker.state is State.OPEN
        await asyncio.sleep(0.1)  # past wait_duration: the next call is the trial
        timer = client.async_proxy(TimerApi)
        trial = asyncio.ensure_future(timer.sleep(5.0))
        while breaker.state is not State.HALF_OPEN or not breaker._trials_out:
            await asyncio.sleep(0.005)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert not breaker._trials_out and breaker.state is State.HALF_OPEN
        await timer.sleep(0.0)  # let through as the trial, and it succeeds
        assert breaker.state is State.CLOSED

    with serving(1) as addresses, \
            Client(StaticRegistry(keys(addresses)), ClientConfig(breaker=breakers)) as client:
        client._loop().run(scenario(client, keys(addresses)[0]))
