"""v1.0 on real loopback sockets: answers, and every kind of bad input followed by a good client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from support import run, until

from stages.v1_0 import (
    Client,
    ClientConfig,
    ConfigError,
    Frame,
    FrameCodec,
    FrameType,
    RemoteError,
    RpcTimeoutError,
    Server,
    ServerConfig,
    Status,
    TransportError,
    UserService,
    encode_frame,
)
from stages.v1_0.protocol import HEADER, MAGIC, PROTOCOL_VERSION


@asynccontextmanager
async def user_server(**config: object) -> AsyncIterator[Server]:
    server = Server(ServerConfig(**config))  # type: ignore[arg-type]
    server.register("userService", UserService().methods())
    async with server:
        yield server


async def raw_exchange(address: tuple[str, int], payload: bytes) -> list[Frame]:
    """Send raw bytes and read until the server closes; return the frames it answered."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(payload)
    codec = FrameCodec()
    while data := await reader.read(65536):
        codec.feed(data)
    writer.close()
    await writer.wait_closed()
    return list(codec.frames())


async def assert_still_serves(server: Server) -> None:
    user = await Client(*server.address).call("userService", "getUser", id=7)
    assert user == {"id": "7", "name": "Grace Hopper", "email": "grace.7@example.org"}


def test_get_user_returns_the_parsed_answer() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            client = Client(*server.address)
            assert await client.call("userService", "getUser", id=123456) == {
                "id": "123456", "name": "Alan Turing", "email": "alan.123456@example.org"}
            text = "x&y=z ü" * 100
            assert await client.call("userService", "echo", text=text) == {"text": text}

    run(scenario)


def test_concurrent_callers_each_get_their_own_answer() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            client = Client(*server.address)
            users = await asyncio.gather(*(client.call("userService", "getUser", id=i)
                                           for i in range(1, 101)))
            assert [u["id"] for u in users] == [str(i) for i in range(1, 101)]

    run(scenario)


@pytest.mark.parametrize(
    "service, method, params, status, message",
    [
        ("orderService", "getUser", {"id": 1}, Status.NOT_FOUND, "unknown service 'orderService'"),
        ("userService", "getAddress", {"id": 1}, Status.NOT_FOUND, "unknown method 'getAddress'"),
        ("userService", "getUser", {}, Status.BAD_REQUEST, "missing a required argument: 'id'"),
        ("userService", "getUser", {"id": 1, "x": 2}, Status.BAD_REQUEST, "unexpected keyword"),
        ("userService", "getUser", {"id": "abc"}, Status.INTERNAL, "ValueError: invalid literal"),
        ("userService", "getUser", {"id": -1}, Status.INTERNAL, "must be positive"),
    ],
)
def test_remote_errors_are_clear(service: str, method: str, params: dict[str, object],
                                 status: Status, message: str) -> None:
    async def scenario() -> None:
        async with user_server() as server:
            with pytest.raises(RemoteError) as info:
                await Client(*server.address).call(service, method, **params)
            assert info.value.status == status
            assert message in info.value.message
            await assert_still_serves(server)

    run(scenario)


def request_bytes(body: bytes, request_id: int = 1) -> bytes:
    return encode_frame(Frame(FrameType.REQUEST, request_id, body))


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (b"\x00" * 64, Status.PROTOCOL_ERROR, "bad magic"),
        (b"GET / HTTP/1.1\r\n\r\n", Status.PROTOCOL_ERROR, "bad magic"),
        (HEADER.pack(MAGIC, 7, 1, 0, 0, 0, 3, 0), Status.PROTOCOL_ERROR, "protocol version 7"),
        (HEADER.pack(MAGIC, PROTOCOL_VERSION, 1, 0, 0, 0, 9, 0xFFFFFFFF), Status.TOO_LARGE,
         "4294967295 bytes exceeds the limit"),
    ],
)
def test_unreadable_frames_get_an_error_then_the_connection_closes(
    payload: bytes, status: Status, message: str
) -> None:
    async def scenario() -> None:
        async with user_server() as server:
            # raw_exchange returns only once the server has closed the connection.
            [frame] = await raw_exchange(server.address, payload)
            assert frame.status == status
            assert message in frame.body.decode()
            await assert_still_serves(server)
            await until(lambda: server.connection_count == 0)

    run(scenario)


@pytest.mark.parametrize(
    "body, status",
    [
        (b"userService", Status.BAD_REQUEST),
        (b"userService:__init__", Status.BAD_REQUEST),
        (b"userService:getUser?id=1&id=2", Status.BAD_REQUEST),
        (b"\xff\xfe\xfd", Status.BAD_REQUEST),
    ],
)
def test_malformed_request_lines_get_bad_request_and_the_connection_lives(body: bytes, status: Status) -> None:
    async def scenario() -> None:
        async with user_server() as server:
            reader, writer = await asyncio.open_connection(*server.address)
            codec = FrameCodec()
            # A bad request followed by a good one on the same connection: both are answered.
            writer.write(request_bytes(body, 1) + request_bytes(b"userService:getUser?id=5", 2))
            answers: list[Frame] = []
            while len(answers) < 2:
                codec.feed(await reader.read(65536))
                answers.extend(codec.frames())
            writer.close()
            await writer.wait_closed()
            assert (answers[0].request_id, answers[0].status) == (1, status)
            assert (answers[1].request_id, answers[1].status) == (2, Status.OK)

    run(scenario)


def test_half_a_frame_then_disconnect_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            for _ in range(20):
                _, writer = await asyncio.open_connection(*server.address)
                writer.write(request_bytes(b"userService:getUser?id=1")[:10])
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            await assert_still_serves(server)
            await until(lambda: server.connection_count == 0)

    run(scenario)


def test_a_peer_trickling_half_a_frame_is_cut_off_after_frame_timeout() -> None:
    async def scenario() -> None:
        async with user_server(frame_timeout=0.3, idle_timeout=30) as server:
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection(*server.address)
            start = loop.time()
            data = request_bytes(b"userService:getUser?id=1")
            for byte in data[:-1]:  # one byte every 50 ms never completes the frame in time
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)
                if reader.at_eof() or writer.is_closing():
                    break
                if loop.time() - start > 0.3:
                    await assert_still_serves(server)
            assert await reader.read() == b""  # the server closed it
            assert 0.25 < loop.time() - start < 3.0
            writer.close()
            await writer.wait_closed()

    run(scenario)


def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    async def scenario() -> None:
        async with user_server(idle_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
            await until(lambda: server.connection_count == 0)

    run(scenario)


def test_a_response_larger_than_the_client_accepts_is_refused() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            client = Client(*server.address, ClientConfig(max_frame_size=100))
            with pytest.raises(Exception, match="exceeds the limit"):
                await client.call("userService", "echo", text="x" * 1000)
            await assert_still_serves(server)

    run(scenario)


def test_no_server_is_a_transport_error_and_a_silent_one_a_timeout() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            address = server.address
        with pytest.raises(TransportError, match="refused"):
            await Client(*address).call("userService", "getUser", id=1)

        # A listener that accepts and never answers.
        accepted: list[asyncio.StreamWriter] = []
        silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        async with silent:
            port = silent.sockets[0].getsockname()[1]
            client = Client("127.0.0.1", port, ClientConfig(timeout=0.2))
            with pytest.raises(RpcTimeoutError, match="within 0.2 s"):
                await client.call("userService", "getUser", id=1)
            for w in accepted:
                w.close()
                await w.wait_closed()

    run(scenario)


def test_aclose_closes_open_connections() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            reader, writer = await asyncio.open_connection(*server.address)
            await until(lambda: server.connection_count == 1)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()

    run(scenario)


@pytest.mark.parametrize("kwargs", [{"port": 70000}, {"host": ""}, {"frame_timeout": 0},
                                    {"max_frame_size": -1}, {"idle_timeout": "1"}])
def test_bad_config_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ClientConfig(timeout=-1)


def test_a_request_in_another_codec_is_refused() -> None:
    async def scenario() -> None:
        async with user_server() as server:
            frame = await Client(*server.address).exchange(
                Frame(FrameType.REQUEST, 4, b"userService:getUser?id=1", codec=2))
            assert frame.status == Status.BAD_REQUEST
            assert b"codec 2 is not supported" in frame.body

    run(scenario)


def test_request_ids_skip_zero_when_they_wrap() -> None:
    client = Client("127.0.0.1", 1)
    client._ids = iter([0, 1, 0xFFFFFFFE, 0xFFFFFFFF])  # type: ignore[assignment]
    assert [client.next_request_id() for _ in range(4)] == [1, 2, 0xFFFFFFFF, 1]
