"""The v3.x command lines a user runs: demo and bench, each starting what it needs."""

from __future__ import annotations

import json
import re

from support import run_stage


def test_demo_narrates_discovery_a_kill_a_restart_and_a_graceful_stop(zookeeper: str) -> None:
    done = run_stage("v3_x", "demo", "--zk", zookeeper, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "consumer sees 3 providers of UserApi" in out
    assert re.search(r"300 calls, balanced by p2c: .*, 0 errors", out), out
    assert re.search(r"its entry went away after \d+\.\d s", out), out
    assert "a new provider registered; the consumer sees 3 again" in out
    failed = re.search(r"stopped a provider gracefully while calls went on: (\d+) calls, (\d+) "
                       r"failed", out)
    assert failed is not None and int(failed.group(1)) > 0 and failed.group(2) == "0", out


def test_bench_measures_v3_against_v2_1_in_one_run(zookeeper: str) -> None:
    done = run_stage("v3_x", "bench", "--zk", zookeeper, "--calls", "200", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert set(result["curves"]) == {"v2.1 direct", "v3.x via registry (p2c)"}
    assert all(r["errors"] == 0 for curve in result["curves"].values() for r in curve)
    assert 0 < result["tps_64_ratio_v3_over_v21"] < 5
