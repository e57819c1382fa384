"""Tests for ``stages.harness.peers``: the gRPC and bare-echo peers we benchmark against.

Each server runs as a real child process, started the way the benchmarks start it
(:class:`ServerProcess`, port 0, ``listening on`` line), with ``PYTHONWARNINGS=error`` so a
warning in the child fails the test as one in this process would. Clients run in this process,
one ``asyncio.run`` per test, and close everything they open (``filterwarnings = error`` turns a
leaked socket's ``ResourceWarning`` into a failure).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from support import running, wait_until

from stages.harness.peers import EchoPeerClient, GrpcPeerClient, regenerate
from stages.harness.peers.bench_echo_pb2 import User
from stages.harness.peers.echo_peer import (
    HEADER,
    EchoServer,
    blocking_call,
    complete_prefix,
    encode,
)
from stages.harness.peers.grpc_peer import make_user
from stages.harness.process import ServerProcess

ECHO = "stages.harness.peers.echo_peer"
GRPC = "stages.harness.peers.grpc_peer"
KIB16 = 16 * 1024
IN_FLIGHT = 64

T = TypeVar("T")
C = TypeVar("C", EchoPeerClient, GrpcPeerClient)


def start_peer(module: str) -> ServerProcess:
    """Start a peer server child; warnings in it are errors, as they are here."""
    return ServerProcess(module, env={"PYTHONWARNINGS": "error"}, startup_timeout=15.0).start()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ServerProcess]:
    proc = start_peer(ECHO)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.output


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[ServerProcess]:
    proc = start_peer(GRPC)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.output


def with_client(client: C, proc: ServerProcess, body: Callable[[C], Awaitable[T]]) -> T:
    """Connect ``client`` to ``proc``, run ``body(client)``, always close the client."""

    async def main() -> T:
        await client.connect(proc.host, proc.port)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def payload(index: int, size: int = KIB16) -> bytes:
    """``size`` bytes that differ from every other index's (so a mix-up cannot pass)."""
    stamp = index.to_bytes(4, "big")
    return (stamp * (size // 4 + 1))[:size]


# --- the bare echo -----------------------------------------------------------------------------


def test_complete_prefix_counts_whole_frames_only() -> None:
    two = encode(b"abc") + encode(b"")
    assert complete_prefix(b"") == 0
    assert complete_prefix(two[:3]) == 0  # not even a header
    assert complete_prefix(two) == len(two)
    assert complete_prefix(two + encode(b"xyz")[:-1]) == len(two)
    with pytest.raises(ValueError):
        complete_prefix(HEADER.pack(2**32 - 1))


def test_echo_sequential_calls(echo_server: ServerProcess) -> None:
    bodies = [b"", b"x", payload(1, 100), payload(2), payload(3, 200_000)]

    async def body(client: EchoPeerClient) -> list[bytes]:
        return [await client.call(b) for b in bodies]

    assert with_client(EchoPeerClient(), echo_server, body) == bodies


def test_echo_many_calls_in_flight_on_one_connection(echo_server: ServerProcess) -> None:
    bodies = [payload(i) for i in range(IN_FLIGHT)]

    async def body(client: EchoPeerClient) -> list[bytes]:
        return await asyncio.gather(*(client.call(b) for b in bodies))

    assert with_client(EchoPeerClient(), echo_server, body) == bodies


def test_echo_client_with_buffered_reads(echo_server: ServerProcess) -> None:
    # The same answers through the client's other read path (recv_into a buffer it keeps),
    # including a body larger than that buffer and many calls in flight.
    bodies = [b"", b"x", payload(1, 100), payload(3, 300_000)]
    in_flight = [payload(i) for i in range(IN_FLIGHT)]

    async def body(client: EchoPeerClient) -> tuple[list[bytes], list[bytes]]:
        assert isinstance(client._protocol, asyncio.BufferedProtocol)
        return [await client.call(b) for b in bodies], await asyncio.gather(
            *(client.call(b) for b in in_flight))

    assert with_client(EchoPeerClient(buffered_reads=True), echo_server, body) == (
        bodies, in_flight)


def test_echo_answers_stay_matched_under_a_closed_loop(echo_server: ServerProcess) -> None:
    # Workers that send as soon as they are answered mix both client paths: a frame written at
    # once (nothing else queued) and frames batched at the end of the iteration.
    async def worker(client: EchoPeerClient, w: int) -> bool:
        for i in range(40):
            body = payload(w * 1000 + i, 64 + (w * 37 + i * 11) % 3000)
            if await client.call(body) != body:
                return False
        return True

    async def body(client: EchoPeerClient) -> list[bool]:
        return await asyncio.gather(*(worker(client, w) for w in range(8)))

    assert all(with_client(EchoPeerClient(), echo_server, body))


def test_echo_server_reassembles_frames_split_and_merged_across_writes(
        echo_server: ServerProcess) -> None:
    frames = encode(payload(7, 1000)) + encode(b"") + encode(payload(8, 50))

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(echo_server.host, echo_server.port)
        try:
            # A header cut in two, then the rest in odd pieces: the server must buffer and
            # answer with exactly the frames, in order.
            for start in range(0, len(frames), 333):
                writer.write(frames[start:start + 333])
                await writer.drain()
            return await reader.readexactly(len(frames))
        finally:
            writer.close()
            await writer.wait_closed()

    assert asyncio.run(main()) == frames


def test_echo_cancelled_call_does_not_shift_the_answers(echo_server: ServerProcess) -> None:
    async def body(client: EchoPeerClient) -> list[bytes]:
        doomed = asyncio.ensure_future(client.call(b"doomed"))
        await asyncio.sleep(0)  # let it send its frame
        doomed.cancel()
        # FIFO matching: the cancelled call's answer still arrives first and must be dropped.
        return list(await asyncio.gather(client.call(b"a"), client.call(b"b")))

    assert with_client(EchoPeerClient(), echo_server, body) == [b"a", b"b"]


def test_echo_client_errors_say_who_closed_the_connection() -> None:
    async def main() -> None:
        async with EchoServer() as server:
            client = EchoPeerClient()
            await client.connect(*server.address)
            in_flight = asyncio.ensure_future(client.call(b"x"))
            await asyncio.sleep(0)
            await client.aclose()
            with pytest.raises(ConnectionAbortedError):
                await in_flight
            with pytest.raises(RuntimeError):
                await client.call(b"y")

            peer_closes = EchoPeerClient()
            await peer_closes.connect(*server.address)
            assert await peer_closes.call(b"up") == b"up"
            await server.aclose()
            with pytest.raises(ConnectionResetError):
                await peer_closes.call(b"z")
            await peer_closes.aclose()

    asyncio.run(main())


# --- gRPC --------------------------------------------------------------------------------------


def test_grpc_sequential_calls(grpc_server: ServerProcess) -> None:
    ids = [1, 2, 42, 2**40]

    async def body(client: GrpcPeerClient) -> tuple[list[User], bytes]:
        users = [await client.get_user(i) for i in ids]
        return users, await client.echo(payload(5))

    users, echoed = with_client(GrpcPeerClient(), grpc_server, body)
    assert users == [make_user(i) for i in ids]
    assert echoed == payload(5)


def test_grpc_user_is_about_100_bytes() -> None:
    assert 90 <= make_user(12345).ByteSize() <= 110


def test_grpc_many_calls_in_flight_on_one_channel(grpc_server: ServerProcess) -> None:
    ids = list(range(1000, 1000 + IN_FLIGHT))
    bodies = [payload(i) for i in range(IN_FLIGHT)]

    async def body(client: GrpcPeerClient) -> tuple[list[User], list[bytes]]:
        users = await asyncio.gather(*(client.get_user(i) for i in ids))
        echoed = await asyncio.gather(*(client.echo(b) for b in bodies))
        return list(users), echoed

    users, echoed = with_client(GrpcPeerClient(), grpc_server, body)
    assert [u.id for u in users] == ids
    assert users == [make_user(i) for i in ids]
    assert echoed == bodies


def test_grpc_client_refuses_calls_when_not_connected() -> None:
    async def main() -> None:
        client = GrpcPeerClient()
        with pytest.raises(RuntimeError):
            await client.get_user(1)
        await client.aclose()  # idempotent, even when never connected

    asyncio.run(main())


# --- both servers: process life cycle ----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize("module", [ECHO, GRPC], ids=["echo", "grpc"])
def test_server_stops_cleanly_on_signal(module: str, sig: signal.Signals) -> None:
    proc = start_peer(module)
    code = proc.stop(sig=sig, timeout=10.0)
    output = "".join(proc.output)
    assert code == 0, output
    assert output.startswith(f"listening on 127.0.0.1:{proc.port}\n"), output
    assert "shutting down" in output
    assert "Traceback" not in output and "Warning" not in output, output


# --- generated code ----------------------------------------------------------------------------


def test_generated_modules_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert regenerate.main(["--check"]) == 0, capsys.readouterr().err


def test_regenerate_check_reports_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the tree, so that the real committed files are never touched.
    peers = tmp_path / Path(regenerate.PROTO).parent
    peers.mkdir(parents=True)
    source = regenerate.ROOT / Path(regenerate.PROTO).parent
    for name in ("bench_echo.proto", *regenerate.GENERATED):
        shutil.copyfile(source / name, peers / name)
    monkeypatch.setattr(regenerate, "ROOT", tmp_path)
    assert regenerate.differences() == []
    stale = peers / "bench_echo_pb2_grpc.py"
    stale.write_text(stale.read_text().replace("GetUser", "GetUsers"))
    (peers / "bench_echo_pb2.pyi").unlink()
    problems = regenerate.differences()
    assert len(problems) == 2
    assert any("GetUsers" in p for p in problems)
    assert any("bench_echo_pb2.pyi is missing" in p for p in problems)
    assert regenerate.main(["--check"]) == 1


def test_a_child_that_writes_more_than_a_pipe_holds_keeps_serving(tmp_path: Path) -> None:
    # A server that logs a lot after it is ready must not block on a full output pipe.
    script = tmp_path / "chatty.py"
    script.write_text(
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(f'listening on 127.0.0.1:{s.getsockname()[1]}', flush=True)\n"
        "sys.stdout.write('x' * 99 + '\\n' * 1)\n"
        "for _ in range(5000): sys.stdout.write('y' * 99 + '\\n')\n"
        "sys.stdout.flush()\n"
        "conn, _ = s.accept(); conn.sendall(b'done'); conn.close()\n")
    process = ServerProcess("unused", [])
    process.argv = [sys.executable, str(script)]
    with process:
        with socket.create_connection(process.address, timeout=10) as conn:
            assert conn.recv(4) == b"done"  # it wrote 500 kB, then still answered
    assert sum(line.startswith("y") for line in process.output) == 5000


def test_a_server_process_stops_when_the_process_that_started_it_dies(tmp_path: Path) -> None:
    # A notebook's kernel killed with its servers running: they must not run on, unseen.
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import time\n"
        "from stages.harness.process import ServerProcess\n"
        "server = ServerProcess('stages.v2_1').start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(120)\n")
    with subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE,
                          text=True) as starter:
        assert starter.stdout is not None
        child = int(starter.stdout.readline())
        assert running(child)
        starter.kill()  # no chance to stop its server: SIGKILL
        starter.wait()
    wait_until(lambda: not running(child), 10, "the orphaned server stops")


def test_a_blocking_call_to_the_echo_gets_its_bytes_back_each_time(
        echo_server: ServerProcess) -> None:
    with socket.create_connection(echo_server.address, timeout=10) as sock:
        small, large = blocking_call(sock, b"abc"), blocking_call(sock, bytes(range(256)) * 400)
        assert [small(), large(), small()] == [b"abc", bytes(range(256)) * 400, b"abc"]
