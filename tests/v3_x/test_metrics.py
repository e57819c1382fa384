"""Monitoring (v3.3): the consumer's metrics, collected from its events, equal the calls it made,
parse as Prometheus text, are served over HTTP, and keep their label values bounded."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import run

from stages.harness.threads import BackgroundServer
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.user_stub import UserApi, UserNotFound
from stages.v2_1 import Client as DirectClient
from stages.v2_1.timer_stub import TimerApi
from stages.v3_x import (
    BreakerConfig,
    CallPolicy,
    Client,
    ClientConfig,
    RemoteError,
    RpcTimeoutError,
    Server,
    ServerConfig,
    StaticRegistry,
)
from stages.v3_x.incident import IncidentApi
from stages.v3_x.metrics import OUTCOMES, CallCounts, ClientMetrics, ServerMetrics, outcome_of
from stages.v3_x.server import UNKNOWN

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]


@contextmanager
def providers(count: int) -> Iterator[list[BackgroundServer[Server]]]:
    def build() -> Server:
        server = Server(ServerConfig(), registry=StaticRegistry([]))
        server.bind(UserApi, UserApiImpl(), inline=True)
        server.enable_incidents()
        return server
    started = [BackgroundServer(build).start() for _ in range(count)]
    try:
        yield started
    finally:
        for bg in started:
            bg.stop()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples}


def test_the_counters_equal_the_calls_made_and_the_text_parses() -> None:
    async def scenario() -> None:
        with providers(2) as bgs:
            keys = [f"{h}:{p}" for h, p in (bg.address for bg in bgs)]
            metrics = ClientMetrics()
            client = metrics.attach(Client(StaticRegistry(keys), ClientConfig()))
            users = client.async_proxy(UserApi)
            for i in range(25):
                await users.get_user(1 + i)
            for _ in range(3):
                with pytest.raises(UserNotFound):
                    await users.get_user(0)  # the method raises: an answer, a remote error
            parsed = samples(metrics.text())
            calls = {outcome: parsed.get(("rpc_client_calls_total", (
                ("api", USERS), ("method", "get_user"), ("outcome", outcome))), 0)
                for outcome in OUTCOMES}
            assert calls["ok"] == 25 and calls["remote_error"] == 3
            assert sum(calls.values()) == 28
            count = parsed[("rpc_client_call_duration_seconds_count",
                            (("api", USERS), ("method", "get_user")))]
            assert count == 28
            attempts = sum(v for (name, labels), v in parsed.items()
                           if name == "rpc_client_attempts_total" and ("outcome", "ok") in labels)
            assert attempts == 28  # one attempt each, spread over the two providers
            assert parsed[("rpc_client_calls_in_flight", (("api", USERS),))] == 0
            await client.aclose()

    run(scenario)


def test_failures_breakers_and_ejections_are_counted_by_kind() -> None:
    async def scenario() -> None:
        with providers(2) as bgs:
            bad = f"{bgs[0].address[0]}:{bgs[0].address[1]}"
            control = DirectClient(*bgs[0].address)
            await control.async_proxy(IncidentApi).slow(1.0, 60)
            await control.aclose()
            keys = [bad, f"{bgs[1].address[0]}:{bgs[1].address[1]}"]
            metrics = ClientMetrics()
            client = metrics.attach(Client(StaticRegistry(keys), ClientConfig(
                timeout=0.2, balancer="round_robin",
                breaker=BreakerConfig(window_size=2, minimum_calls=2, wait_duration=30))))
            client.set_policy(UserApi, CallPolicy())
            users = client.async_proxy(UserApi)
            timeouts = 0
            for i in range(10):
                try:
                    await users.get_user(1 + i)
                except RpcTimeoutError:
                    timeouts += 1
            snap = metrics.snapshot()
            assert timeouts >= 1
            assert snap["rpc_client_calls_total"][(USERS, "get_user", "timeout")] == timeouts
            assert snap["rpc_client_attempts_total"][(USERS, bad, "timeout")] == timeouts
            assert snap["rpc_client_ejections_total"][(bad,)] == 1  # set aside at once
            await client.aclose()

    run(scenario)


def test_the_metrics_are_served_over_http_for_prometheus() -> None:
    metrics = ClientMetrics()
    metrics.transitions.labels("127.0.0.1:1", "get_user", "open").inc(3)
    host, port = metrics.serve(0)
    assert host == "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        body = response.read()
        assert response.headers["Content-Type"].startswith("text/plain")
    assert samples(body)[("rpc_client_breaker_transitions_total", (
        ("method", "get_user"), ("provider", "127.0.0.1:1"), ("state", "open")))] == 3


def test_outcomes_are_a_bounded_set_whatever_the_error() -> None:
    errors = [None, RpcTimeoutError("x" * 10_000), UserNotFound(1), ValueError("any message"),
              KeyError("k")]
    assert {outcome_of(e) for e in errors} <= set(OUTCOMES)


def test_the_client_state_is_read_at_each_scrape() -> None:
    async def scenario() -> None:
        with providers(2) as bgs:
            keys = [f"{h}:{p}" for h, p in (bg.address for bg in bgs)]
            metrics = ClientMetrics()
            client = metrics.attach(Client(StaticRegistry(keys), ClientConfig()))
            before = samples(metrics.text())
            assert before[("rpc_client_connections_open", ())] == 0
            for i in range(10):
                await client.async_proxy(UserApi).get_user(1 + i)
            after = samples(metrics.text())
            assert after[("rpc_client_connections_open", ())] == 2
            assert after[("rpc_client_providers", (("api", USERS),))] == 2
            assert after[("rpc_client_settings_refused_total", ())] == 0
            await client.aclose()
            assert samples(metrics.text())[("rpc_client_connections_open", ())] == 0

    run(scenario)


def test_a_providers_counters_equal_the_calls_it_answered_and_names_stay_bounded() -> None:
    async def scenario() -> None:
        metrics = ServerMetrics()
        with providers(1) as (bg,):
            bg.call(lambda: metrics.attach(bg.server))
            client = DirectClient(*bg.address)
            users = client.async_proxy(UserApi)
            for i in range(12):
                await users.get_user(1 + i)
            for _ in range(2):
                with pytest.raises(UserNotFound):
                    await users.get_user(0)
            # An interface this provider does not serve: answered NOT_FOUND, and counted under
            # "(unknown)", never under the name the client made up.
            with pytest.raises(RemoteError):
                await client.async_proxy(TimerApi).block(0.01)
            snap = metrics.snapshot()
            calls = snap["rpc_server_calls_total"]
            assert calls[(USERS, "get_user", "ok")] == 12
            assert sum(v for (api, _, status), v in calls.items()
                       if api == USERS and status != "ok") == 2
            assert calls[(UNKNOWN, UNKNOWN, "not_found")] == 1
            assert snap["rpc_server_call_duration_seconds_count"][(USERS, "get_user")] == 14
            assert snap["rpc_server_connections_open"][()] == 1
            assert snap["rpc_server_refused_total"][("overloaded",)] == 0
            host, port = metrics.serve(0)
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
                    served = samples(r.read())
            finally:
                metrics.close()
            assert served[("rpc_server_calls_total", (
                ("api", USERS), ("method", "get_user"), ("status", "ok")))] == 12
            await client.aclose()

    run(scenario)


def test_counts_of_every_attached_object_are_added_and_a_bound_is_its_own_bucket() -> None:
    # The histogram's "le" buckets: a duration equal to a bound is counted in that bound's
    # bucket; two attached servers' counts are added at scrape time.
    metrics = ServerMetrics()
    first, second = CallCounts(), CallCounts()
    metrics.counts.extend([first, second])
    for counts, seconds in ((first, 0.001), (second, 0.001), (second, 0.0010001)):
        counts.calls.add((USERS, "get_user", "ok"))
        counts.durations.observe((USERS, "get_user"), seconds)
    snap = metrics.snapshot()
    assert snap["rpc_server_calls_total"] == {(USERS, "get_user", "ok"): 3}
    buckets = snap["rpc_server_call_duration_seconds_bucket"]
    assert buckets[(USERS, "get_user", "0.0005")] == 0
    assert buckets[(USERS, "get_user", "0.001")] == 2
    assert buckets[(USERS, "get_user", "0.0025")] == 3
    assert buckets[(USERS, "get_user", "+Inf")] == 3
    assert snap["rpc_server_call_duration_seconds_count"] == {(USERS, "get_user"): 3}
    assert abs(snap["rpc_server_call_duration_seconds_sum"][(USERS, "get_user")] - 0.0030001) < 1e-12
