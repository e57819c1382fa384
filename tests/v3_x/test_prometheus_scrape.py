"""Monitoring (v3.3) proven against a real Prometheus: it scrapes two provider processes and a
consumer, and what PromQL answers (counts, a rate, a latency quantile from the histogram) agrees
with the calls actually made."""

from __future__ import annotations

import bisect
import statistics
import time

import pytest
from support import run
from zk_support import provider

from stages.harness.prometheus import LocalPrometheus, sample_value
from stages.v2_0.user_stub import UserApi, UserNotFound
from stages.v3_x import Client, ClientConfig, ZooKeeperRegistry
from stages.v3_x.metrics import BUCKETS, ClientMetrics

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]
CALLS, MISSING = 300, 5


def total(prometheus: LocalPrometheus, promql: str, expected: float) -> float:
    """Wait until ``promql`` (one series) reads ``expected``; return what it read."""
    result = prometheus.wait_for_query(
        promql, lambda r: len(r) == 1 and sample_value(r[0]) == expected, timeout=20)
    return sample_value(result[0])


def test_prometheus_scrapes_providers_and_a_consumer_and_agrees_with_the_calls(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        with provider(zk_chroot, "--metrics-port", "0") as one, \
                provider(zk_chroot, "--metrics-port", "0") as two:
            client = Client(ZooKeeperRegistry(zk_chroot), ClientConfig())
            metrics = ClientMetrics()
            metrics.attach(client)
            host, port = metrics.serve(0)
            targets = [one.metrics_address, two.metrics_address, f"{host}:{port}"]
            assert None not in targets
            try:
                await scrape_and_check(targets, client)  # type: ignore[arg-type]
            finally:  # even when a check fails: no ZooKeeper session or HTTP thread left behind
                await client.aclose()
                metrics.close()

    run(scenario, 120)


async def scrape_and_check(targets: list[str], client: Client) -> None:
    with LocalPrometheus(targets, scrape_interval=0.5) as prometheus:
        prometheus.wait_for_targets_up(3, timeout=30)
        users = client.async_proxy(UserApi)
        seconds = []
        # In two halves, with a scrape of every target between them: a rate needs a counter
        # that grew between two scrapes (a series first seen at its final value has none). The
        # targets are scraped at their own moments: each side's count is awaited.
        for i in range(CALLS):
            if i == CALLS // 2:
                total(prometheus, 'sum(rpc_client_calls_total{outcome="ok"})', i)
                total(prometheus, 'sum(rpc_server_calls_total{method="get_user"})', i)
            started = time.perf_counter()
            await users.get_user(1 + i)
            seconds.append(time.perf_counter() - started)
        for _ in range(MISSING):
            with pytest.raises(UserNotFound):
                await users.get_user(0)
        # Counts: the consumer's by outcome, the providers' summed over both.
        assert total(prometheus, 'sum(rpc_client_calls_total{outcome="ok"})',
                     CALLS) == CALLS
        assert total(prometheus, 'sum(rpc_client_calls_total{outcome="remote_error"})',
                     MISSING) == MISSING
        assert total(prometheus, 'sum(rpc_server_calls_total{method="get_user"})',
                     CALLS + MISSING) == CALLS + MISSING
        per_provider = prometheus.query(
            'sum by (instance) (rpc_server_calls_total{status="ok"})')
        assert len(per_provider) == 2 and sum(map(sample_value, per_provider)) == CALLS
        # A rate over the last minute: calls were made between scrapes, so it is above zero.
        rate = prometheus.query('sum(rate(rpc_server_calls_total[1m]))')
        assert rate and sample_value(rate[0]) > 0
        # The median from the histogram's buckets lies in the bucket of the median the
        # test measured itself, or a neighbour: Prometheus interpolates inside a bucket, and the
        # consumer's timer runs inside the test's, so its times are a little shorter.
        quantile = prometheus.query('histogram_quantile(0.5, sum by (le) '
                                    '(rpc_client_call_duration_seconds_bucket))')
        median = statistics.median(seconds)
        i = bisect.bisect_left(BUCKETS, median)
        low = BUCKETS[i - 2] if i >= 2 else 0.0
        high = BUCKETS[min(i + 1, len(BUCKETS) - 1)]
        estimate = sample_value(quantile[0])
        assert low <= estimate <= high, (estimate, median, low, high)
