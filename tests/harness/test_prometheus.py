"""The lab bench's Prometheus, tested against a real server scraping a real exporter (no mocks).

The exporter is ``prometheus_client``'s own HTTP server with a Counter and a Histogram whose
values we know. Prometheus 2.42 applies a change of targets at most every 5 s, so the module
shares one server and pays that wait once: the server starts with no targets and is given the
exporter with ``set_targets``, the way a notebook does it. Tests that stop a server or make one
fail start their own (a start takes a fraction of a second). Nothing sleeps in the hope that
something has happened: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from stages.harness.prometheus import (
    PROMETHEUS_BIN,
    LocalPrometheus,
    PrometheusAPIError,
    PrometheusStartError,
    PrometheusUnavailable,
    prometheus_available,
    prometheus_duration,
    render_config,
    sample_value,
)

SCRAPE_INTERVAL = 0.5
# The first scrape of a new target comes up to ~5 s after the change, plus one interval.
TARGET_TIMEOUT = 20.0

INCREMENTS = 42
# 10 fast calls and 5 slower ones: the median (the 7.5th of 15) lies in the (0.1, 0.2] bucket.
BUCKETS = (0.1, 0.2, 0.5, 1.0)
OBSERVATIONS = [0.15] * 10 + [0.3] * 5


@dataclass
class Exporter:
    """A ``/metrics`` endpoint on 127.0.0.1 serving a Counter and a Histogram we filled."""

    target: str
    requests: Counter
    latency: Histogram


@contextmanager
def running_exporter() -> Iterator[Exporter]:
    """Serve a fresh registry's metrics over HTTP for the ``with`` block, then shut down."""
    registry = CollectorRegistry()
    requests = Counter("demo_requests", "Requests served.", registry=registry)
    latency = Histogram(
        "demo_latency_seconds", "Time per request.", buckets=BUCKETS, registry=registry
    )
    for _ in range(INCREMENTS):
        requests.inc()
    for seconds in OBSERVATIONS:
        latency.observe(seconds)
    # Port 0: the kernel picks a free port while binding, so no other process can take it in
    # between; we read it back. start_http_server returns the server and its thread.
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(f"127.0.0.1:{server.server_port}", requests, latency)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)


@dataclass
class Bench:
    """The module's exporter and Prometheus, and what the server scraped before set_targets."""

    exporter: Exporter
    prometheus: LocalPrometheus
    targets_at_start: list[dict[str, Any]]


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    """One exporter and one Prometheus for the whole module.

    The server starts with no targets; the exporter is added right away with set_targets, so
    the server's first application of targets (about 5 s after its start) already includes it.
    """
    with (
        running_exporter() as exporter,
        LocalPrometheus(scrape_interval=SCRAPE_INTERVAL) as prometheus,
    ):
        targets_at_start = prometheus.active_targets()
        prometheus.set_targets([exporter.target])
        yield Bench(exporter, prometheus, targets_at_start)


@pytest.fixture(scope="module")
def scraped(bench: Bench) -> Bench:
    """The module's bench once Prometheus has scraped the exporter successfully."""
    bench.prometheus.wait_for_targets_up(1, timeout=TARGET_TIMEOUT)
    return bench


def _series(bench: Bench, metric: str) -> str:
    """``metric`` restricted to the exporter's series."""
    return f'{metric}{{job="rpc", instance="{bench.exporter.target}"}}'


def _runs_prometheus(pid: int) -> bool:
    """True if a process with this id exists and runs a prometheus binary (Linux /proc)."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"prometheus" in command_line


# -- the config we generate -------------------------------------------------------------------


def test_durations_are_written_in_whole_milliseconds() -> None:
    # Prometheus 2.42 rejects "0.5s": durations are integers with a unit.
    assert prometheus_duration(0.5) == "500ms"
    assert prometheus_duration(1.0) == "1000ms"
    with pytest.raises(ValueError, match="at least 1 ms"):
        prometheus_duration(0.0001)


@pytest.mark.parametrize("target", ["localhost:9100", "0.0.0.0:9100", "127.0.0.1", "127.0.0.1:x",
                                    "127.0.0.1:70000", "http://127.0.0.1:9100"])
def test_only_loopback_targets_are_accepted(target: str) -> None:
    with pytest.raises(ValueError, match="127.0.0.1:PORT"):
        render_config([target], 1.0)
    with pytest.raises(ValueError, match="127.0.0.1:PORT"):
        LocalPrometheus([target])


@pytest.mark.parametrize("targets", [[], ["127.0.0.1:9100", "127.0.0.1:9101"]])
def test_the_generated_config_passes_promtool(targets: list[str], tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(render_config(targets, 0.5))
    # promtool comes in the same Debian package; it checks a config as the server would.
    check = subprocess.run(
        [str(PROMETHEUS_BIN.with_name("promtool")), "check", "config", str(config)],
        capture_output=True, text=True, timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = config.read_text()
    assert "scrape_interval: 500ms" in text and "scrape_timeout: 500ms" in text
    for target in targets:
        assert f'"{target}"' in text


# -- scraping and querying ------------------------------------------------------------------


def test_set_targets_adds_an_endpoint_to_a_running_server(bench: Bench) -> None:
    prometheus, target = bench.prometheus, bench.exporter.target
    assert bench.targets_at_start == []
    assert prometheus.targets == (target,)

    [up] = prometheus.wait_for_targets_up(1, timeout=TARGET_TIMEOUT)

    assert up["scrapeUrl"] == f"http://{target}/metrics"
    assert up["labels"] == {"job": "rpc", "instance": target}
    assert up["lastError"] == ""


def test_the_counter_reads_exactly_the_number_of_increments(scraped: Bench) -> None:
    # prometheus_client names the counter's series demo_requests_total. A target is "up" a
    # moment before its samples can be queried, so wait for the series itself.
    result = scraped.prometheus.wait_for_query(
        _series(scraped, "demo_requests_total"), lambda result: len(result) == 1
    )
    assert sample_value(result[0]) == INCREMENTS


def test_histogram_quantile_lands_in_the_bucket_of_the_median(scraped: Bench) -> None:
    buckets = _series(scraped, "demo_latency_seconds_bucket")
    result = scraped.prometheus.wait_for_query(
        f"histogram_quantile(0.5, {buckets})", lambda result: len(result) == 1
    )
    median = sample_value(result[0])
    # Prometheus only knows bucket counts: the median is somewhere in (0.1, 0.2], and it
    # interpolates linearly inside the bucket: 0.1 + 0.1 * 7.5 / 10 = 0.175.
    assert 0.1 < median <= 0.2
    assert median == pytest.approx(0.175)

    [count] = scraped.prometheus.query(_series(scraped, "demo_latency_seconds_count"))
    [total] = scraped.prometheus.query(_series(scraped, "demo_latency_seconds_sum"))
    assert sample_value(count) == len(OBSERVATIONS)
    assert sample_value(total) == pytest.approx(sum(OBSERVATIONS))


def test_a_scalar_result_comes_back_as_one_sample(bench: Bench) -> None:
    [sample] = bench.prometheus.query("1 + 1")
    assert sample["metric"] == {}
    assert sample_value(sample) == 2


def test_a_bad_query_raises_with_the_servers_reason(bench: Bench) -> None:
    with pytest.raises(PrometheusAPIError, match="bad_data: .*parse error"):
        bench.prometheus.query("sum(")


def test_waiting_for_more_targets_than_exist_names_each_target(scraped: Bench) -> None:
    with pytest.raises(TimeoutError, match="1 of 2 targets up") as failure:
        scraped.prometheus.wait_for_targets_up(2, timeout=0.2)
    assert f"http://{scraped.exporter.target}/metrics: up" in str(failure.value)


# -- life cycle ---------------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_directory() -> None:
    prometheus = LocalPrometheus()
    with prometheus:
        pid, workdir = prometheus.pid, prometheus.workdir
        assert pid is not None and workdir is not None
        assert _runs_prometheus(pid)
        assert (workdir / "prometheus.yml").is_file()
        assert prometheus.url == f"http://127.0.0.1:{prometheus.port}"

    assert not prometheus.running
    assert not _runs_prometheus(pid)
    assert not workdir.exists()
    prometheus.stop()  # a second stop is harmless


def test_a_missing_binary_raises_with_install_instructions(tmp_path: Path) -> None:
    missing = tmp_path / "prometheus"
    assert prometheus_available()
    assert not prometheus_available(missing)
    with pytest.raises(PrometheusUnavailable, match="apt-get install prometheus"):
        LocalPrometheus(binary=missing).start()


def test_a_failed_start_raises_with_the_log_and_leaves_nothing_behind() -> None:
    # Another socket holds the port we ask for: Prometheus logs the bind error and exits. (Bound
    # but not listening: the harness's readiness probes are refused at once, not left hanging.)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        prometheus = LocalPrometheus(port=port)
        with pytest.raises(PrometheusStartError) as failure:
            prometheus.start()

    message = str(failure.value)
    assert "exited with code" in message
    assert f"127.0.0.1:{port}: bind: address already in use" in message
    assert "prometheus.log" in message
    assert not prometheus.running
    assert prometheus.workdir is None
