"""The v2.1 command line, as a user runs it."""

from __future__ import annotations

import json

from support import run_stage

from stages.harness.process import ServerProcess


def test_demo_shows_multiplexing_deadlines_heartbeat_and_shutdown() -> None:
    done = run_stage("v2_1", "demo")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1000 calls in flight at once: all answered, 1 connection opened" in out
    assert "RpcTimeoutError" in out
    assert "still connected: True" in out
    assert "the call in flight still completes (True)" in out


def test_server_and_client_processes_with_heartbeat_options() -> None:
    with ServerProcess("stages.v2_1", ["--idle-timeout", "3", "--min-ping-interval", "0.1"]) as server:
        done = run_stage("v2_1", "client", "--port", str(server.port), "--calls", "3",
                       "--heartbeat-interval", "0.5", "--serializer", "protobuf")
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("User(id=") == 3
    assert server.process is not None and server.process.returncode == 0


def test_bench_compares_with_grpc_and_the_bare_echo() -> None:
    done = run_stage("v2_1", "bench", "--calls", "100", "--runs", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    ratios = report["median_ratios"]
    assert all(value > 0 for value in ratios.values())
    assert report["ratios_per_run"] == [ratios]  # one run: its ratios are the medians
    rows = report["last_run"]
    assert {"v2.1 get_user", "grpc.aio get_user", "bare echo 100 B"} <= set(rows)
    assert all(r["errors"] == 0 for results in rows.values() for r in results)
