"""The v1.0 command line, run as a user would run it: real processes."""

from __future__ import annotations

import json
import socket

from support import run_stage

from stages.harness.process import ServerProcess


def test_demo_calls_and_exits_zero() -> None:
    done = run_stage("v1_0", "demo")
    assert done.returncode == 0, done.stderr
    assert "userService:getUser?id=123456 -> {'id': '123456'" in done.stdout
    assert "[NOT_FOUND] unknown method 'getAddress'" in done.stdout


def test_server_and_client_processes() -> None:
    with ServerProcess("stages.v1_0") as server:
        done = run_stage("v1_0", "client", "--host", server.host, "--port", str(server.port), "--calls", "2")
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("'name'") == 2
    assert server.process is not None and server.process.returncode == 0  # clean SIGTERM exit
    assert "shutting down" in "".join(server.output)


def test_client_fails_with_non_zero_exit_when_nobody_listens() -> None:
    with ServerProcess("stages.v1_0") as server:
        port = server.port
    done = run_stage("v1_0", "client", "--port", str(port))
    assert done.returncode == 1
    assert "refused" in done.stderr


def test_bench_reports_json_figures() -> None:
    done = run_stage("v1_0", "bench", "--calls", "50", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {"v1.0 getUser", "v1.0 echo 16 KiB"}
    for rows in figures.values():
        assert [r["concurrency"] for r in rows] == [1, 4, 16, 64]
        assert all(r["errors"] == 0 and r["calls"] == 50 and r["tps"] > 0 for r in rows)


def test_a_port_in_use_is_a_clear_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for stage in ("v1_0", "v2_1"):  # every stage's server command shares this
            done = run_stage(stage, "server", "--port", str(port), timeout=60)
            assert done.returncode == 1, done.stderr
            assert f"error: cannot listen on 127.0.0.1:{port}" in done.stderr
            assert "address already in use" in done.stderr and "--port 0" in done.stderr
            assert "Traceback" not in done.stderr
