"""v2.1 against dead, frozen, silent and chatty peers: real processes, real sockets, no mocks.

RELIABILITY.md section 2 (D1 frozen provider, D2 silent client, D3 no false positives), plus a
killed server, a killed client, a black-holed link and a client that pings too often. Every
wait is on a condition with a deadline; the only plain sleeps are the idle periods of the
no-false-positive test, where being idle *is* the test.
"""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import run, until, wait_until

from stages.harness.faultproxy import FaultProxyThread
from stages.harness.ports import free_port
from stages.harness.process import ServerProcess
from stages.harness.threads import BackgroundServer
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import (
    Client,
    ClientConfig,
    ConnectionClosedError,
    Frame,
    FrameCodec,
    FrameType,
    GoAway,
    ServerConfig,
    TransportError,
)
from stages.v2_1.cli import new_server
from stages.v2_1.timer_stub import TimerApi

STAGE = "stages.v2_1"
ROOT = Path(__file__).resolve().parents[2]

#: Detection may take the idle timeout plus this much (timer tick, scheduling, a busy CI box).
MARGIN = 0.7


# -- helpers -------------------------------------------------------------------------------------


def process_state(pid: int) -> str:
    """The one-letter state of a process (``T`` when stopped), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@contextmanager
def busy_cores(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` child processes spinning on a core each; killed and reaped on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)


def check_detection_time(config: ClientConfig, failed_at: float, last_read: float,
                         since_fault: float) -> None:
    """A dead peer is declared exactly ``idle_timeout`` after its last sign of life (never
    sooner), and at most ``idle_timeout`` + :data:`MARGIN` after the fault.

    The last read may precede the fault by up to one heartbeat interval (plus a round trip),
    so measured from the fault the lower bound is ``idle - interval`` less some slack.
    ``last_read`` is on the loop's clock, which is ``time.monotonic()``.
    """
    assert failed_at - last_read >= config.idle - 0.005, (failed_at - last_read, config.idle)
    assert config.idle - config.heartbeat_interval - 0.05 < since_fault < config.idle + MARGIN, \
        since_fault


def all_fail_with(results: list[Any], cls: type[BaseException]) -> None:
    for result in results:
        assert isinstance(result, cls), f"expected {cls.__name__}, got {result!r}"


# -- D1: a frozen server --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_paused_server_fails_pending_calls_within_idle_timeout_then_recovers() -> None:
    """SIGSTOP: the socket stays open and the kernel even ACKs our bytes, but nobody answers.

    Only the heartbeat can tell: pending calls must fail with ConnectionClosedError after
    ``idle_timeout`` (0.3 s), not wait for their 10 s deadline. After SIGCONT a new call
    succeeds on a new connection.
    """
    config = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3, timeout=10)
    with ServerProcess(STAGE, ["--min-ping-interval", "0.05"]) as proc:

        async def scenario() -> None:
            client = Client(proc.host, proc.port, config)
            try:
                users = client.async_proxy(UserApi)
                timer = client.async_proxy(TimerApi)
                assert (await users.get_user(1)).id == 1  # the last read is now
                conn = client.connection
                assert conn is not None and client.connects == 1

                proc.pause()
                start = time.monotonic()
                calls = [asyncio.ensure_future(timer.sleep(0)) for _ in range(3)]
                calls.append(asyncio.ensure_future(users.get_user(2)))
                await until(lambda: process_state(proc.pid) == "T", 2.0,
                                  "the server process is stopped")
                results = await asyncio.gather(*calls, return_exceptions=True)
                failed_at = time.monotonic()
                elapsed = failed_at - start

                all_fail_with(results, ConnectionClosedError)
                check_detection_time(config, failed_at, conn._heartbeat.last_read, elapsed)
                assert conn.transport is None and not conn.usable

                proc.resume()
                await until(lambda: process_state(proc.pid) != "T", 2.0,
                                  "the server process runs again")
                assert (await users.get_user(3)).id == 3
                assert await timer.sleep(0) > 0
                assert client.connects == 2
                assert client.connection is not conn
            finally:
                await client.aclose()

        run(scenario)


# -- a killed server: the socket closes, no heartbeat needed -------------------------------------


@pytest.mark.timeout(60)
def test_killed_server_fails_pending_calls_at_once_then_reconnects_to_its_successor() -> None:
    """SIGKILL: the kernel closes the server's sockets, so the client hears it at once.

    The heartbeat is slow on purpose (1 s / 3 s): detection must come from the socket closing.
    While nothing listens a call fails with TransportError; once a new server listens on the
    same port, a call succeeds after the reconnection backoff.
    """
    port = free_port()
    config = ClientConfig(heartbeat_interval=1.0, idle_timeout=3.0, timeout=10,
                          backoff_initial=0.05, backoff_max=0.4)
    first = ServerProcess(STAGE, ["--port", str(port)])
    second = ServerProcess(STAGE, ["--port", str(port)])
    try:
        first.start()
        assert first.port == port

        async def scenario() -> None:
            client = Client("127.0.0.1", port, config)
            try:
                users = client.async_proxy(UserApi)
                timer = client.async_proxy(TimerApi)
                assert (await users.get_user(1)).id == 1
                conn = client.connection
                assert conn is not None

                sleeps = [asyncio.ensure_future(timer.sleep(5)) for _ in range(3)]
                await until(lambda: len(conn.pending) == 3, 2.0, "three calls sent")
                # Frames of one connection are read in order: once this answer is back, the
                # server has read the three sleeps and is running them.
                assert (await users.get_user(2)).id == 2

                start = time.monotonic()
                first.kill()
                results = await asyncio.gather(*sleeps, return_exceptions=True)
                elapsed = time.monotonic() - start
                all_fail_with(results, ConnectionClosedError)
                assert elapsed < 0.5, elapsed

                with pytest.raises(TransportError) as refused:
                    await users.get_user(3)
                assert not isinstance(refused.value, ConnectionClosedError), refused.value

                second.start()
                assert second.port == port
                deadline = time.monotonic() + 10
                failures = 0
                while True:
                    try:
                        user = await users.get_user(4)
                        break
                    except TransportError:
                        failures += 1
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.02)
                assert user.id == 4
                assert client.connects == 2
            finally:
                await client.aclose()

        run(scenario)
    finally:
        first.stop()
        second.stop()


# -- a killed client: the server releases everything it held for it ----------------------------


CLIENT_SCRIPT = """
import sys, threading, time
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig
from stages.v2_1.timer_stub import TimerApi

client = Client(sys.argv[1], int(sys.argv[2]), ClientConfig(timeout=120))
assert client.proxy(UserApi).get_user(1).id == 1
threading.Thread(target=client.proxy(TimerApi).sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_killed_client_is_released_by_the_server() -> None:
    """SIGKILL of a client with a call running on the server: the connection and the call's
    task are gone within a deadline, without waiting for the (long) idle timeout."""
    config = ServerConfig(idle_timeout=30.0)
    with BackgroundServer(lambda: new_server(config)) as bg:
        server = bg.server
        assert server is not None
        host, port = bg.address
        with subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, host, str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=ROOT) as child:
            try:
                assert child.stdout is not None
                ready, _, _ = select.select([child.stdout], [], [], 30)
                line = child.stdout.readline() if ready else ""
                assert line.strip() == "ready", line or "no output from the client"

                def running() -> list[asyncio.Task[Any]]:
                    return [t for c in server.connections for t in c.running.values()]

                wait_until(lambda: len(bg.call(running)) == 1, 5.0, "the 60 s sleep is running")
                assert bg.call(lambda: server.connection_count) == 1
                tasks = bg.call(running)

                child.kill()
                child.wait(10)
                took = wait_until(lambda: bg.call(lambda: server.connection_count) == 0, 2.0,
                                  "the server dropped the dead client's connection")
                assert took < 1.0, took
                wait_until(lambda: bg.call(lambda: all(t.done() for t in tasks)), 2.0,
                           "the dead client's call was cancelled")
                assert all(t.cancelled() for t in tasks)

                def leftovers() -> tuple[list[Any], list[asyncio.Task[Any]]]:
                    me = asyncio.current_task()
                    return server.connections, [t for t in asyncio.all_tasks()
                                                if t is not me and not t.done()]

                assert bg.call(leftovers) == ([], [])
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(10)


# -- D2: a silent client ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_silent_raw_socket_is_closed_after_idle_timeout() -> None:
    """A socket that connects and never sends a byte is closed after the server's
    ``idle_timeout``; the client reads at most a GOAWAY ``idle``, then EOF."""
    idle = 0.3
    with BackgroundServer(lambda: new_server(ServerConfig(idle_timeout=idle))) as bg:
        server = bg.server
        assert server is not None
        with socket.create_connection(bg.address, timeout=5) as sock:
            start = time.monotonic()
            wait_until(lambda: bg.call(lambda: server.connection_count) == 1, 2.0,
                       "the server accepted the silent connection")
            received = b""
            while chunk := sock.recv(4096):  # socket timeout 5 s: never hangs
                received += chunk
            elapsed = time.monotonic() - start

        assert idle - 0.05 < elapsed < idle + MARGIN, elapsed
        if received:
            codec = FrameCodec()
            codec.feed(received)
            frame = codec.next_frame()
            assert isinstance(frame, Frame), received
            assert (frame.type, frame.body) == (FrameType.GOAWAY, GoAway.IDLE.value.encode())
            assert codec.buffered == 0, received
        wait_until(lambda: bg.call(lambda: server.connection_count) == 0, 2.0,
                   "the server forgot the silent connection")
        assert bg.call(lambda: server.connections) == []


# -- a black-holed link ------------------------------------------------------------------------------


def calls_into_the_hole(users: Any, timer: Any) -> list[BaseException | None]:
    """Four blocking calls at once (three sleeps and a get_user); what each raised."""
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(timer.sleep, 0) for _ in range(3)]
        calls.append(pool.submit(users.get_user, 2))
        return [call.exception(timeout=10) for call in calls]


@pytest.mark.timeout(60)
def test_blackholed_link_is_declared_dead_then_healed() -> None:
    """Both directions swallowed by a proxy: both sockets look healthy to TCP, nothing gets
    through. The client's heartbeat declares the connection dead after ``idle_timeout``; once
    the link heals, the next call succeeds on a new connection. Blocking calls here take the
    route through the loop's multiplexed connection (no direct connections); the next test
    takes the direct route."""
    server_config = ServerConfig(min_ping_interval=0.05, idle_timeout=5.0)
    config = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3, timeout=10,
                          direct_connections=0)
    with BackgroundServer(lambda: new_server(server_config)) as bg, \
            FaultProxyThread(bg.address) as proxy:
        client = Client(*proxy.address, config)
        try:
            users = client.proxy(UserApi)
            timer = client.proxy(TimerApi)
            assert users.get_user(1).id == 1
            proxy.wait_connections(1)
            conn = client.connection
            assert conn is not None

            proxy.blackhole()
            start = time.monotonic()
            errors = calls_into_the_hole(users, timer)
            failed_at = time.monotonic()
            all_fail_with(errors, ConnectionClosedError)
            check_detection_time(config, failed_at, conn._heartbeat.last_read, failed_at - start)
            assert proxy.stats.upstream.swallowed > 0  # the calls and pings went into the hole

            proxy.heal()
            assert users.get_user(3).id == 3
            assert client.connects == 2
            assert client.connection is not conn
            assert proxy.stats.accepted == 2
        finally:
            client.close()


@pytest.mark.timeout(60)
def test_blackholed_link_is_declared_dead_by_a_waiting_direct_call_then_healed() -> None:
    """The same black hole, with blocking calls that each own a direct connection (see
    stages.v2_1.blocking): each waiting caller pings on its own heartbeat and gives up after
    ``idle_timeout``, long before the call's 10 s deadline; after the heal, calls work again."""
    server_config = ServerConfig(min_ping_interval=0.05, idle_timeout=5.0)
    config = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.3, timeout=10)
    with BackgroundServer(lambda: new_server(server_config)) as bg, \
            FaultProxyThread(bg.address) as proxy:
        with Client(*proxy.address, config) as client:
            users = client.proxy(UserApi)
            timer = client.proxy(TimerApi)
            assert users.get_user(1).id == 1
            assert client.direct.connects == 1 and client.connection is None

            proxy.blackhole()
            start = time.monotonic()
            errors = calls_into_the_hole(users, timer)
            elapsed = time.monotonic() - start
            all_fail_with(errors, ConnectionClosedError)
            assert all("heartbeat idle timeout" in str(e) for e in errors), errors
            assert config.idle - 0.05 < elapsed < config.idle + MARGIN, elapsed
            assert proxy.stats.upstream.swallowed > 0  # the calls and pings went into the hole

            proxy.heal()
            assert users.get_user(3).id == 3
            assert client.direct.connects >= 2 and client.connection is None


# -- D3: no false positives with both cores busy ---------------------------------------------------


@pytest.mark.timeout(60)
def test_no_false_dead_verdict_with_both_cores_busy() -> None:
    """Idle periods longer than the client's idle timeout (and some longer than the server's),
    with every core spinning: pings alone must keep the connection alive, and it never drops."""
    config = ClientConfig(heartbeat_interval=0.1, idle_timeout=0.5, timeout=5)
    with ServerProcess(STAGE, ["--idle-timeout", "1.0", "--min-ping-interval", "0.05"]) as proc, \
            busy_cores(2):

        async def scenario() -> None:
            client = Client(proc.host, proc.port, config)
            try:
                users = client.async_proxy(UserApi)
                timer = client.async_proxy(TimerApi)
                assert (await users.get_user(1)).id == 1
                conn = client.connection
                assert conn is not None
                first_ping = conn._heartbeat.last_ping
                for i, idle in enumerate([0.6, 1.1, 0.6, 1.1], start=2):
                    await asyncio.sleep(idle)  # the idle period is the test, not a hope
                    user, _ = await asyncio.gather(users.get_user(i), timer.sleep(0.01))
                    assert user.id == i
                    assert client.connects == 1, f"connection dropped before call {i}"
                assert client.connection is conn and conn.usable
                assert conn._heartbeat.last_ping > first_ping  # it did ping while idle
            finally:
                await client.aclose()

        run(scenario)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("short_side", ["server", "client"])
def test_no_false_dead_verdict_while_the_server_pushes_back(short_side: str) -> None:
    """Push back (``max_concurrent_calls`` reached: the server stops reading) is not silence.

    One call slot, a 1 s call in it and a second call queued behind it: the server has
    stopped reading by its own choice, while the client is healthy and pings every 0.1 s.
    Neither side may declare the other dead. ``short_side`` picks whose idle timeout (0.5 s)
    is shorter than the call; the other side's is long, so each variant isolates one verdict:

    * ``server``: the server must not close the connection as idle: the client's pings are
      only unread because the server paused reading, and closing cancels the running call;
    * ``client``: the server must still answer pings (or otherwise show life) while it pushes
      back, or the client closes a healthy connection and fails both calls.
    """
    server_idle, client_idle = (0.5, 5.0) if short_side == "server" else (30.0, 0.5)
    server_config = ServerConfig(max_concurrent_calls=1, idle_timeout=server_idle,
                                 min_ping_interval=0.05)
    config = ClientConfig(heartbeat_interval=0.1, idle_timeout=client_idle, timeout=5)
    with BackgroundServer(lambda: new_server(server_config)) as bg:

        async def scenario() -> None:
            client = Client(*bg.address, config)
            try:
                timer = client.async_proxy(TimerApi)
                start = time.monotonic()
                results = await asyncio.gather(timer.sleep(1.0), timer.sleep(0),
                                               return_exceptions=True)
                elapsed = time.monotonic() - start
                assert all(isinstance(r, float) for r in results), (
                    f"healthy connection declared dead after {elapsed:.2f} s during push back "
                    f"(goaway={client.connection and client.connection.goaway}): {results}")
                assert elapsed >= 1.0
                assert client.connects == 1
            finally:
                await client.aclose()

        run(scenario)


# -- a client that pings too often ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_too_many_pings_gets_goaway_and_the_client_backs_off() -> None:
    """A client pinging every 20 ms against a server allowing one ping a second: after its
    strikes it gets GOAWAY ``too_many_pings`` and is disconnected; the client doubles its
    heartbeat interval, and the next call still works on a new connection."""
    # idle_timeout 0.2, not the minimum 0.04: the strikes come within ~0.1 s anyway, and a pong
    # late by a few tens of ms on a loaded machine must not close the connection first.
    config = ClientConfig(heartbeat_interval=0.02, idle_timeout=0.2, timeout=5)
    with ServerProcess(STAGE, ["--min-ping-interval", "1.0"]) as proc:

        async def scenario() -> None:
            client = Client(proc.host, proc.port, config)
            try:
                users = client.async_proxy(UserApi)
                assert (await users.get_user(1)).id == 1
                conn = client.connection
                assert conn is not None
                async with asyncio.timeout(5):
                    await asyncio.shield(conn.closed)
                assert conn.goaway is GoAway.TOO_MANY_PINGS
                assert client.endpoint.heartbeat_interval == 0.04

                assert (await users.get_user(2)).id == 2
                assert client.connects == 2
                new = client.connection
                assert new is not None and new is not conn
                assert new._heartbeat.interval == 0.04
            finally:
                await client.aclose()

        run(scenario)
