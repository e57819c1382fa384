"""The lab bench's ZooKeeper, tested against real servers (no mocks).

Tests that only need *a* server share the session's one through the ``zookeeper`` and
``zk_chroot`` fixtures. Tests that stop, pause, kill or restart a server start their own, so
that nothing they do leaks into other tests. Nothing sleeps in the hope that something has
happened: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from stages.harness.ports import free_port, free_ports
from stages.harness.zookeeper import (
    LocalZooKeeper,
    ZooKeeperEnsemble,
    ZooKeeperStartError,
    ZooKeeperUnavailable,
    expire_session,
    four_letter_word,
    resolve_zookeeper,
    zookeeper_available,
)

ClientFactory = Callable[..., KazooClient]


class StateRecorder:
    """Records a kazoo client's state changes so a test can wait for one of them."""

    def __init__(self, client: KazooClient) -> None:
        self._states: queue.Queue[KazooState] = queue.Queue()
        # kazoo calls listeners on its own thread; Queue.put does not block.
        client.add_listener(self._states.put)

    def wait_for(self, wanted: KazooState, timeout: float = 10.0) -> list[KazooState]:
        """Consume recorded states up to and including ``wanted``; return them in order."""
        deadline = time.monotonic() + timeout
        seen: list[KazooState] = []
        while True:
            try:
                state = self._states.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {wanted} within {timeout} s; saw {seen}") from None
            seen.append(state)
            if state == wanted:
                return seen


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """Creates kazoo clients and stops and closes each of them after the test."""
    clients: list[KazooClient] = []

    def make(hosts: str, **options: object) -> KazooClient:
        client = KazooClient(hosts=hosts, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
        client.close()


def _child_pids() -> set[int]:
    """The process ids whose parent is this process (read from /proc, Linux)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name (field 2) is in parentheses and may contain spaces.
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid():
            children.add(int(entry.name))
    return children


def _config(zk: LocalZooKeeper) -> dict[str, str]:
    """The server's effective configuration, from the ``conf`` four-letter word."""
    answer = four_letter_word(zk.host, zk.port, "conf")
    return dict(line.split("=", 1) for line in answer.splitlines() if "=" in line)


# -- ports -------------------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(9)
    assert len(set(ports)) == 9
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
    with pytest.raises(ValueError):
        free_ports(0)


# -- standalone --------------------------------------------------------------------------


def test_standalone_serves_clients_and_stop_cleans_up(make_client: ClientFactory) -> None:
    zk = LocalZooKeeper()
    try:
        zk.start()
        assert zk.running
        assert zk.pid == zk.process.pid  # type: ignore[union-attr]
        assert zk.hosts == f"127.0.0.1:{zk.port}"
        assert four_letter_word(zk.host, zk.port, "ruok") == "imok"
        assert zk.mode() == "standalone"
        # The short tick is what makes session-expiry scenarios run in seconds.
        config = _config(zk)
        assert (config["tickTime"], config["minSessionTimeout"], config["maxSessionTimeout"]) == (
            "200",
            "400",
            "4000",
        )

        client = make_client(zk.hosts)
        client.start()
        client.create("/hello", b"world")
        assert client.get("/hello")[0] == b"world"
        client.stop()

        workdir = zk.workdir
        assert workdir is not None and (workdir / "data" / "version-2").is_dir()
        # The server logs to its file, and the console stays quiet (no SLF4J NOP warning).
        assert "binding to port" in zk.log_path.read_text()  # type: ignore[union-attr]
        assert "SLF4J" not in (workdir / "console.log").read_text()
    finally:
        zk.stop()

    assert not zk.running and zk.pid is None
    assert zk.process is not None and zk.process.returncode is not None
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        four_letter_word(zk.host, zk.port, "ruok")
    # The port is free for a new server (which, like ZooKeeper, sets SO_REUSEADDR so that
    # connections still in TIME_WAIT do not block it).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((zk.host, zk.port))
    zk.stop()  # a second stop is harmless


def test_context_manager_starts_and_stops_even_a_paused_server() -> None:
    with LocalZooKeeper() as zk:
        assert zk.mode() == "standalone"
        workdir = zk.workdir
        assert workdir is not None and workdir.is_dir()
        zk.pause()
    assert not zk.running
    assert not workdir.exists()
    # 143 = 128 + SIGTERM: the JVM woke up and exited on SIGTERM; it was not SIGKILLed.
    assert zk.process is not None and zk.process.returncode == 143


def test_restart_keeps_port_and_data(make_client: ClientFactory) -> None:
    def read_kept() -> bytes:
        client = make_client(zk.hosts)
        client.start()
        try:
            data: bytes = client.get("/kept")[0]
            return data
        finally:
            client.stop()

    with LocalZooKeeper() as zk:
        port, first_pid = zk.port, zk.pid
        client = make_client(zk.hosts)
        client.start()
        client.create("/kept", b"across restarts")
        client.stop()

        zk.restart()  # graceful: SIGTERM, then start on the same port and data
        assert (zk.port, zk.mode()) == (port, "standalone")
        assert zk.pid != first_pid
        assert read_kept() == b"across restarts"

        zk.kill()  # a crash: SIGKILL, the directory stays
        assert not zk.running and zk.data_dir is not None and zk.data_dir.is_dir()
        zk.restart()
        assert zk.port == port
        assert read_kept() == b"across restarts"

    zk.stop()
    with pytest.raises(RuntimeError, match="nothing to restart"):
        zk.restart()  # stop() deleted the data


def test_pause_freezes_the_server_and_resume_thaws_it(make_client: ClientFactory) -> None:
    with LocalZooKeeper() as zk:
        # A 1 s session: kazoo pings every ~0.3 s and suspends after ~0.7 s of silence.
        client = make_client(zk.hosts, timeout=1.0)
        states = StateRecorder(client)
        client.start()
        states.wait_for(KazooState.CONNECTED)

        zk.pause()
        try:
            assert zk.running  # frozen, not dead
            # The kernel still accepts the connection; nobody answers on it.
            with pytest.raises(TimeoutError):
                four_letter_word(zk.host, zk.port, "ruok", timeout=0.3)
            states.wait_for(KazooState.SUSPENDED)
        finally:
            zk.resume()

        # Back, with the same session or (if the server expired it on waking) a new one.
        states.wait_for(KazooState.CONNECTED, timeout=20.0)
        assert four_letter_word(zk.host, zk.port, "ruok") == "imok"
        KazooRetry(max_tries=-1, deadline=10.0)(client.ensure_path, "/after-pause")


def test_failed_start_reports_the_log_tail() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        zk = LocalZooKeeper(port=taken.getsockname()[1])
        with pytest.raises(ZooKeeperStartError, match="exited with code") as failure:
            zk.start()
    assert "Address already in use" in str(failure.value)
    # Nothing is left behind: no process, no directory.
    assert not zk.running and zk.workdir is None


def test_missing_zookeeper_explains_how_to_get_one(tmp_path: Path) -> None:
    missing = tmp_path / "zookeeper.jar"
    assert zookeeper_available()
    assert not zookeeper_available(jar=missing)
    with pytest.raises(ZooKeeperUnavailable) as failure:
        LocalZooKeeper(jar=missing).start()
    message = str(failure.value)
    assert "apt-get install zookeeper" in message
    assert "make setup" in message
    assert "RPC_ZK=host:port" in message


# -- ensemble ----------------------------------------------------------------------------


def test_ensemble_survives_losing_its_leader(make_client: ClientFactory) -> None:
    with ZooKeeperEnsemble() as ensemble:
        members = ensemble.members
        assert len(members) == 3 and ensemble.hosts.count(",") == 2
        assert sorted(m.mode() or "" for m in members) == ["follower", "follower", "leader"]
        retry = KazooRetry(max_tries=-1, deadline=20.0)

        client = make_client(ensemble.hosts)
        client.start()
        client.create("/value", b"before")

        leader = ensemble.leader()
        assert leader is not None
        ensemble.stop_member(leader)
        ensemble.wait_for_quorum()  # the two others elect a new leader
        assert ensemble.leader() not in (None, leader)
        # The client may have been on the stopped member, or on a follower that went
        # looking for a leader: it reconnects, and the retry covers the gap.
        retry(client.set, "/value", b"during")

        ensemble.start_member(leader)  # waits until it serves again
        assert members[leader].mode() == "follower"
        # Talking to that member only: it caught up with what was written without it.
        alone = make_client(members[leader].hosts)
        alone.start()
        alone.sync("/value")
        assert alone.get("/value")[0] == b"during"


# -- session expiry, chroot --------------------------------------------------------------


def test_expire_session_loses_the_session_and_the_client_gets_a_new_one(
    zk_chroot: str, make_client: ClientFactory
) -> None:
    client = make_client(zk_chroot)
    states = StateRecorder(client)
    client.start()
    states.wait_for(KazooState.CONNECTED)
    client.create("/mine", ephemeral=True)
    old_session, _ = client.client_id

    expire_session(client, zk_chroot)

    states.wait_for(KazooState.LOST)
    states.wait_for(KazooState.CONNECTED, timeout=15.0)
    assert client.client_id[0] != old_session
    # The ephemeral node ended with its session.
    assert client.exists("/mine") is None


def test_expire_session_needs_a_connected_client(
    zk_chroot: str, make_client: ClientFactory
) -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        expire_session(make_client(zk_chroot), zk_chroot)


def test_zk_chroot_is_a_private_namespace(
    zookeeper: str, zk_chroot: str, make_client: ClientFactory
) -> None:
    assert zk_chroot.startswith(zookeeper + "/test-")
    inside = make_client(zk_chroot)
    inside.start()
    inside.create("/node", b"x")
    root = make_client(zookeeper)
    root.start()
    assert root.get(zk_chroot[len(zookeeper) :] + "/node")[0] == b"x"


# -- resolve_zookeeper -------------------------------------------------------------------


def test_resolve_zookeeper_with_a_named_server_starts_nothing() -> None:
    before = _child_pids()
    with resolve_zookeeper("zk.example:2181", environ={}) as hosts:
        assert hosts == "zk.example:2181"
        assert _child_pids() == before
    with resolve_zookeeper(environ={"RPC_ZK": " zk1:2181,zk2:2181 "}) as hosts:
        assert hosts == "zk1:2181,zk2:2181"
        assert _child_pids() == before
    with resolve_zookeeper("explicit:1", environ={"RPC_ZK": "env:2"}) as hosts:
        assert hosts == "explicit:1"  # --zk beats RPC_ZK


def test_resolve_zookeeper_otherwise_runs_a_local_server() -> None:
    with resolve_zookeeper(environ={}) as hosts:
        host, _, port = hosts.rpartition(":")
        assert four_letter_word(host, int(port), "ruok") == "imok"
    with pytest.raises(ConnectionRefusedError):
        four_letter_word(host, int(port), "ruok")


def test_four_letter_word_checks_the_word() -> None:
    with pytest.raises(ValueError):
        four_letter_word("127.0.0.1", 1, "status")
