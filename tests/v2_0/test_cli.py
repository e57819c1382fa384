"""The v2.0 command line, as a user runs it."""

from __future__ import annotations

import json

from support import run_stage

from stages.harness.process import ServerProcess


def test_demo_runs_provider_and_consumer_for_both_serializers() -> None:
    done = run_stage("v2_0", "demo")
    assert done.returncode == 0, done.stderr
    for ser in ("pickle", "protobuf"):
        assert f"[{ser}] user_api.get_user(123456) -> User(id=123456" in done.stdout
        assert f"[{ser}] inventory.audit() raised an undeclared" in done.stdout
        assert f"[{ser}] user_api.get_user(0) raised the declared UserNotFound" in done.stdout


def test_server_and_client_processes() -> None:
    with ServerProcess("stages.v2_0") as server:
        for ser in ("pickle", "protobuf"):
            done = run_stage("v2_0", "client", "--port", str(server.port), "--calls", "2", "--serializer", ser)
            assert done.returncode == 0, done.stderr
            assert done.stdout.count("User(id=") == 2


def test_bench_json() -> None:
    done = run_stage("v2_0", "bench", "--calls", "30", "--json", "--serializer", "protobuf")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {"v2.0 protobuf get_user", "v2.0 protobuf echo 16 KiB"}
    assert all(r["errors"] == 0 and r["tps"] > 0 for rows in figures.values() for r in rows)
