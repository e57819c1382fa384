"""The v3.x command lines a user runs: demo and bench, each starting what it needs."""

from __future__ import annotations

import json
import re

from support import run_stage


def test_demo_tells_the_whole_v3_story(zookeeper: str) -> None:
    done = run_stage("v3_x", "demo", "--zk", zookeeper, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # 3.0 and 3.1
    assert "consumer sees 3 providers of UserApi" in out
    assert re.search(r"300 calls, balanced by p2c: .*, 0 errors", out), out
    # 3.2: a kill under failover costs no call; a graceful stop neither.
    assert re.search(r"killed provider .*; 300 calls meanwhile, failover: .*, 0 failed", out), out
    assert re.search(r"its entry went away after \d+\.\d s", out), out
    assert "a new provider registered; the consumer sees 3 again" in out
    failed = re.search(r"stopped a provider gracefully while calls went on: (\d+) calls, (\d+) "
                       r"failed", out)
    assert failed is not None and int(failed.group(1)) > 0 and failed.group(2) == "0", out
    opened = re.search(r"froze provider ([\d.:]+) .*: 30 calls \{.*\}, (\d+) failed", out)
    assert opened is not None and int(opened.group(2)) <= 3, out  # those before the breaker
    assert re.search(r"its breaker for get_user went closed -> open \(.*\) -> half_open .* -> "
                     r"closed", out), out
    # 3.3: the config center, monitoring, who may call.
    applied = re.search(r"applied by the consumer (\d+) ms later", out)
    assert applied is not None and int(applied.group(1)) < 1000, out
    shares = re.search(r"500 calls: \{'([\d.:]+)': (\d+),.*\}, 0 failed \(([\d.:]+) has weight 800",
                       out)
    assert shares is not None and shares.group(1) == shares.group(3), out
    assert int(shares.group(2)) > 250, out  # 800 of 1000 by weight: at least half, surely
    assert "answered '(degraded)' by the fallback, 0 calls sent to providers" in out
    assert re.search(r"a bad document \(timeout -3\) was refused: version 1 stays in force", out)
    versions = re.search(r"every consumer and provider reports it: \[([\d, ]+)\]", out)
    assert versions is not None and len(set(versions.group(1).split(", "))) == 1, out
    assert re.search(r"a real Prometheus scrapes 4 targets; it counts \d+ calls", out), out
    assert "without the token from the registry: refused, UNAUTHENTICATED" in out


def test_bench_measures_v3_against_v2_1_in_one_run(zookeeper: str) -> None:
    done = run_stage("v3_x", "bench", "--zk", zookeeper, "--calls", "200", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert set(result["curves"]) == {"v2.1 direct", "v3.x via registry (p2c)"}
    assert all(r["errors"] == 0 for curve in result["curves"].values() for r in curve)
    assert 0 < result["tps_64_ratio_v3_over_v21"] < 5


def test_bench_costs_measures_each_guard_against_plain(zookeeper: str) -> None:
    done = run_stage("v3_x", "bench", "--costs", "--zk", zookeeper, "--calls", "300",
                     "--rounds", "1", "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    costs = json.loads(done.stdout)["costs"]
    assert [c["setting"] for c in costs] == ["plain", "metrics", "token", "TLS", "all three"]
    assert all(c["tps"] > 0 and c["client_cpu_us"] > 0 and c["server_cpu_us"] > 0 for c in costs)


def test_the_zookeeper_command_serves_until_ctrl_c_and_leaves_nothing_behind() -> None:
    import signal
    import socket
    import subprocess
    import sys

    from stages.harness.zookeeper import four_letter_word

    process = subprocess.Popen([sys.executable, "-m", "stages.v3_x", "zookeeper"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert found, line
        port = int(found.group(1))
        assert four_letter_word("127.0.0.1", port, "ruok") == "imok"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        with socket.socket() as probe:  # the server went with it
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
