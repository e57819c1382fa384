"""Staged incidents and the per-API overload cap (v3.2), against real servers: a provider made
to fail, slow down or freeze on command, and one that answers "overloaded" past its cap."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from support import run, run_stage
from zk_support import provider as provider_process

from stages.harness.threads import BackgroundServer
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.user_stub import User, UserApi
from stages.v2_1 import Client as DirectClient
from stages.v2_1 import ClientConfig as DirectConfig
from stages.v2_1.timer_stub import TimerApi, TimerImpl
from stages.v3_x import (
    CallPolicy,
    Client,
    ClientConfig,
    PeakEwma,
    RemoteError,
    Server,
    ServerConfig,
    StaticRegistry,
)
from stages.v3_x.client import Attempt
from stages.v3_x.errors import ConfigError, ConnectionClosedError, RpcTimeoutError, Status
from stages.v3_x.incident import IncidentApi, Incidents

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]

# -- the state, pure ---------------------------------------------------------------------------


def test_an_incident_lasts_its_seconds_and_heal_ends_it() -> None:
    incidents = Incidents()
    incidents.stage("slow", 10, now=100.0, delay=0.5)
    assert incidents.active(109.9).delay == 0.5
    assert incidents.active(110.0) is None and incidents.current is None
    incidents.stage("fail", 10, now=200.0)
    incidents.heal()
    assert incidents.active(200.0) is None
    assert [i.kind for i in incidents.history] == ["slow", "fail"]


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), 7200, "5", True])
def test_bad_durations_are_refused(seconds: object) -> None:
    with pytest.raises(ConfigError):
        Incidents().stage("fail", seconds, now=0.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Incidents().stage("slow", 1, now=0.0, delay=seconds)  # type: ignore[arg-type]


# -- against a real provider -------------------------------------------------------------------


def provider(config: ServerConfig | None = None) -> Server:
    server = Server(config or ServerConfig(), registry=StaticRegistry([]))
    server.bind(UserApi, UserApiImpl(), inline=True)
    server.bind(TimerApi, TimerImpl())
    server.enable_incidents()
    return server


@contextmanager
def background_provider(config: ServerConfig | None = None) -> Iterator[BackgroundServer[Server]]:
    """A provider on its own event loop and thread: a frozen provider must not freeze the test."""
    with BackgroundServer(lambda: provider(config)) as bg:
        yield bg


@asynccontextmanager
async def direct(address: tuple[str, int], timeout: float = 2.0) -> AsyncIterator[DirectClient]:
    client = DirectClient(*address, DirectConfig(timeout=timeout))
    try:
        yield client
    finally:
        await client.aclose()


def test_the_control_interface_is_served_but_never_registered() -> None:
    async def scenario() -> None:
        registered: list[str] = []

        class Recording(StaticRegistry):
            async def register(self, api_address: str, info: object) -> None:
                registered.append(api_address)

        server = Server(ServerConfig(), registry=Recording([]))
        server.bind(UserApi, UserApiImpl(), inline=True)
        control = server.enable_incidents()
        async with server:
            assert registered == [UserApi.__rpc_api__.address]  # type: ignore[attr-defined]
            assert control in server.bindings and control in server.unlisted

    run(scenario)


def test_slow_runs_every_call_late_but_not_the_control() -> None:
    async def scenario() -> None:
        with background_provider() as bg:
            async with direct(bg.address) as client:
                users, control = client.async_proxy(UserApi), client.async_proxy(IncidentApi)
                assert await control.slow(0.3, 30) == "0.3 s late for 30 s"
                start = time.monotonic()
                assert await users.get_user(7) == UserApiImpl().get_user(7)
                assert time.monotonic() - start >= 0.3
                start = time.monotonic()
                await control.heal()  # not slowed itself
                assert time.monotonic() - start < 0.3
                start = time.monotonic()
                await users.get_user(7)
                assert time.monotonic() - start < 0.3

    run(scenario)


def test_fail_cuts_the_connection_of_every_call_until_healed() -> None:
    async def scenario() -> None:
        with background_provider() as bg:
            async with direct(bg.address) as client:
                users, control = client.async_proxy(UserApi), client.async_proxy(IncidentApi)
                await control.fail(30)
                for _ in range(3):
                    with pytest.raises(ConnectionClosedError):
                        await users.get_user(1)
                assert await control.heal() == "healed"  # the control still answers
                assert await users.get_user(1) == UserApiImpl().get_user(1)

    run(scenario)


def test_freeze_stops_the_provider_and_it_comes_back() -> None:
    async def scenario() -> None:
        with background_provider() as bg:
            async with direct(bg.address, timeout=0.3) as client:
                users, control = client.async_proxy(UserApi), client.async_proxy(IncidentApi)
                await control.freeze(1.0)
                frozen_at = time.monotonic()
                await asyncio.sleep(0.1)
                with pytest.raises(RpcTimeoutError):
                    await users.get_user(1)  # unanswered while its loop sleeps
                while time.monotonic() - frozen_at < 1.2:
                    await asyncio.sleep(0.05)
                assert await users.get_user(1) == UserApiImpl().get_user(1)

    run(scenario)


def test_calls_past_the_per_api_cap_are_answered_overloaded_at_once_and_not_run() -> None:
    async def scenario() -> None:
        with background_provider(ServerConfig(max_calls_per_api=2)) as bg:
            async with direct(bg.address) as client:
                timer = client.async_proxy(TimerApi)
                held = [asyncio.ensure_future(timer.sleep(0.5)) for _ in range(2)]
                await asyncio.sleep(0.1)
                start = time.monotonic()
                with pytest.raises(RemoteError, match="overloaded") as refused:
                    await timer.sleep(0.5)
                assert refused.value.status == Status.UNAVAILABLE
                assert time.monotonic() - start < 0.25  # at once, not queued
                await asyncio.gather(*held)
                assert await timer.sleep(0.01) is not None  # room again
                # Another API of the same provider is not held up by this one's cap.
                assert isinstance(await client.async_proxy(UserApi).get_user(3), User)
                assert bg.server is not None and bg.server.overloaded == 1

    run(scenario)


def test_a_consumer_sends_overloaded_calls_to_another_provider() -> None:
    async def scenario() -> None:
        small, large = ServerConfig(max_calls_per_api=1), ServerConfig(max_calls_per_api=10)
        with background_provider(small) as one, background_provider(large) as two:
            keys = [f"{h}:{p}" for h, p in (one.address, two.address)]
            client = Client(StaticRegistry(keys), ClientConfig(balancer="round_robin"))
            timer = client.async_proxy(TimerApi)
            # Round robin gives each provider two of the four; the one with room for one
            # refuses its second, unrun, and the consumer sends it to the other.
            results = await asyncio.gather(*(timer.sleep(0.3) for _ in range(4)))
            assert len(results) == 4
            assert one.server is not None and one.server.overloaded >= 1
            assert client.stats["redirects"] == one.server.overloaded
            await client.aclose()

    run(scenario)


# -- from the command line ---------------------------------------------------------------------


def test_incidents_are_staged_from_the_command_line_while_a_client_reports(zk_chroot: str) -> None:
    with provider_process(zk_chroot, "--incidents") as proc:
        at = f"{proc.host}:{proc.port}"
        staged = run_stage("v3_x", "incident", "--at", at, "slow", "--delay", "0.05",
                           "--seconds", "60")
        assert staged.returncode == 0 and staged.stdout.strip() == f"{at}: 0.05 s late for 60 s"
        done = run_stage("v3_x", "client", "--zk", zk_chroot, "--mode", "failover", "--calls",
                         "20", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["calls"] == 20 and report["errors"] == 0 and "policy" in report
        healed = run_stage("v3_x", "incident", "--at", at, "heal")
        assert healed.stdout.strip() == f"{at}: healed"


def test_failover_from_the_command_line_hides_a_failing_provider(zk_chroot: str) -> None:
    servers = [provider_process(zk_chroot, "--incidents") for _ in range(2)]
    with servers[0] as bad, servers[1]:
        staged = run_stage("v3_x", "incident", "--at", f"{bad.host}:{bad.port}", "fail")
        assert staged.returncode == 0
        modes = {}
        for mode in ("failfast", "failover"):
            done = run_stage("v3_x", "client", "--zk", zk_chroot, "--lb", "round_robin",
                             "--mode", mode, "--calls", "20", "--json")
            modes[mode] = json.loads(done.stdout)
        assert modes["failfast"]["errors"] >= 1, modes
        assert modes["failfast"]["error_types"].keys() == {"ConnectionClosedError"}, modes
        assert modes["failover"]["errors"] == 0 and modes["failover"]["policy"]["retries"] >= 1, modes


def test_failover_counts_and_pays_only_for_retries_it_can_send() -> None:
    # Two providers that cut every call; failover allows four retries, but there is only one
    # other provider to send to: one retry, counted once, and the caller gets the real error.
    async def scenario() -> None:
        with background_provider() as one, background_provider() as two:
            for bg in (one, two):
                async with direct(bg.address) as control_client:
                    await control_client.async_proxy(IncidentApi).fail(60)
            keys = [f"{h}:{p}" for h, p in (one.address, two.address)]
            client = Client(StaticRegistry(keys), ClientConfig(outlier=None))
            client.set_policy(UserApi, CallPolicy(mode="failover", idempotent=True, retries=4))
            with pytest.raises(ConnectionClosedError):
                await client.async_proxy(UserApi).get_user(1)
            assert client.stats["retries"] == 1, client.stats
            await client.aclose()

    run(scenario)


def test_every_attempt_is_an_event_with_its_provider_and_outcome() -> None:
    async def scenario() -> None:
        with background_provider() as one, background_provider() as two:
            async with direct(one.address) as control_client:
                await control_client.async_proxy(IncidentApi).fail(60)
            keys = [f"{h}:{p}" for h, p in (one.address, two.address)]
            client = Client(StaticRegistry(keys), ClientConfig(balancer="round_robin"))
            client.set_policy(UserApi, CallPolicy(mode="failover", idempotent=True))
            attempts: list[Attempt] = []
            client.attempt_listeners.append(attempts.append)
            users = client.async_proxy(UserApi)
            for i in range(4):
                await users.get_user(1 + i)  # every call answered in the end
            failed = [a for a in attempts if a.error is not None]
            answered = [a for a in attempts if a.error is None]
            assert len(answered) == 4 and {a.provider for a in answered} == {keys[1]}
            assert failed and {a.provider for a in failed} == {keys[0]}
            assert {a.error for a in failed} == {"ConnectionClosedError"}
            assert all(a.api == USERS and a.method == "get_user" and a.seconds >= 0
                       for a in attempts)
            await client.aclose()

    run(scenario)


def test_the_time_of_a_call_that_opened_its_connection_is_not_a_latency_sample() -> None:
    async def scenario() -> None:
        with background_provider() as bg:
            key = f"{bg.address[0]}:{bg.address[1]}"
            client = Client(StaticRegistry([key]), ClientConfig())
            users = client.async_proxy(UserApi)
            await users.get_user(1)  # connects first: its time says nothing of the provider
            candidate = client.views[USERS].candidates[key]
            assert candidate.calls == 1 and candidate.latency.value == PeakEwma().value
            await users.get_user(2)  # on the open connection: measured
            assert candidate.calls == 2 and candidate.latency.value != PeakEwma().value
            await client.aclose()

    run(scenario)
