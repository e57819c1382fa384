"""Reading into the loop thread's buffer: each connection gets exactly its own bytes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from support import run

from stages.v2_0.api import api_spec
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.serializers import Outcome, PickleSerializer, TypeRegistry
from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client
from stages.v2_1.cli import new_server
from stages.v2_1.protocol import NEED_DATA, FrameCodec, FrameType
from stages.v2_1.reader import OwnBufferReader


class Recorder(OwnBufferReader, asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


def receive(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """What a transport does: fill the protocol's buffer, then say how much arrived."""
    buffer = protocol.get_buffer(-1)
    memoryview(buffer)[:len(data)] = data
    protocol.buffer_updated(len(data))


def test_each_read_is_handed_on_as_a_copy_of_just_its_bytes() -> None:
    first, second = Recorder(), Recorder()
    receive(first, b"hello")
    receive(second, b"xy")  # the same buffer, overwritten
    receive(first, b"!")
    assert first.received == [b"hello", b"!"] and second.received == [b"xy"]
    assert all(type(data) is bytes for data in first.received + second.received)


def test_one_buffer_per_thread_shared_by_its_connections() -> None:
    first, second = Recorder(), Recorder()
    here = first.get_buffer(-1)
    assert second.get_buffer(-1) is here and len(here) == OwnBufferReader.READ_SIZE
    elsewhere: list[Any] = []
    thread = threading.Thread(target=lambda: elsewhere.append(Recorder().get_buffer(-1)))
    thread.start()
    thread.join()
    assert elsewhere[0] is not here


def test_v2_1_connections_read_through_the_buffer() -> None:
    async def scenario() -> None:
        server = new_server()
        async with server:
            client = Client(*server.address)
            users = client.async_proxy(UserApi)
            assert await users.get_user(7) == UserApiImpl().get_user(7)
            conn = client.connection
            assert conn is not None and isinstance(conn, asyncio.BufferedProtocol)
            assert all(isinstance(c, asyncio.BufferedProtocol) for c in server.connections)
            await client.aclose()

    run(scenario)


def test_a_request_split_across_reads_is_answered_once_whole() -> None:
    async def scenario() -> None:
        server = new_server()
        conn = server.make_connection()
        written: list[bytes] = []

        class Transport(asyncio.Transport):
            def write(self, data: Any) -> None:
                written.append(bytes(data))

            def is_closing(self) -> bool:
                return False

            def get_extra_info(self, name: str, default: Any = None) -> Any:
                return ("127.0.0.1", 1) if name == "peername" else default

        conn.connection_made(Transport())
        spec = api_spec(UserApi)
        serializer = PickleSerializer(TypeRegistry.of([spec]))
        request = FrameCodec().encode(Client("h", 1).request_frame(spec, "get_user", (3,), {},
                                                                   serializer))
        receive(conn, request[:10])
        assert written == []
        receive(conn, request[10:])
        codec = FrameCodec()
        codec.feed(b"".join(written))
        answer = codec.next_frame()
        assert answer is not NEED_DATA and codec.next_frame() is NEED_DATA  # one answer
        assert answer.type == FrameType.RESPONSE
        assert serializer.decode_outcome(answer.body) == Outcome(UserApiImpl().get_user(3))
        conn.connection_lost(None)

    run(scenario)
