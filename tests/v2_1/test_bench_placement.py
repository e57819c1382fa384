"""``bench --pin``: the client runs on one CPU, every server on the others, and nothing leaks."""

from __future__ import annotations

import os

import pytest

from stages.v2_1.bench import cpu_split, placement


def test_pinned_servers_run_on_the_server_cpus_and_the_client_is_restored() -> None:
    split = cpu_split()
    if split is None:
        pytest.skip("pinning needs at least two usable CPUs")
    client_cpus, server_cpus = split
    assert client_cpus and server_cpus and not client_cpus & server_cpus
    before = os.sched_getaffinity(0)
    with placement(split) as start:
        assert os.sched_getaffinity(0) == client_cpus
        with start("stages.harness.peers.echo_peer") as proc:
            assert os.sched_getaffinity(proc.pid) == server_cpus
            assert os.sched_getaffinity(0) == client_cpus
        assert proc.process is not None and proc.process.poll() is not None  # stopped
    assert os.sched_getaffinity(0) == before


def test_unpinned_leaves_the_affinity_alone() -> None:
    before = os.sched_getaffinity(0)
    with placement(None) as start, start("stages.harness.peers.echo_peer") as proc:
        assert os.sched_getaffinity(proc.pid) == before
        assert os.sched_getaffinity(0) == before
