"""Contract tests every stage must keep passing: bad bytes hurt only their own connection.

Each stage's server is started from its own command-line module (``new_server()``), fed the same
bad inputs over raw sockets, and must answer with a clear error where the header was readable,
close that connection, and go on serving a good request on another connection.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

import pytest

from stages.v1_0.protocol import HEADER, MAGIC, PROTOCOL_VERSION, Frame, FrameCodec, encode_frame
from stages.v2_0.api import address_of
from stages.v2_0.errors import Status
from stages.v2_0.serializers import Invocation, PickleSerializer
from stages.v2_0.user_stub import UserApi


def v1_request() -> bytes:
    return encode_frame(Frame(1, 1, b"userService:getUser?id=1"))


def v2_request() -> bytes:
    body = PickleSerializer().encode_invocation(Invocation(address_of(UserApi), "get_user", (1,)))
    return encode_frame(Frame(1, 1, body, codec=PickleSerializer.serializer_id))


STAGES: dict[str, Callable[[], bytes]] = {"v1_0": v1_request, "v2_0": v2_request, "v2_1": v2_request}

BAD_INPUTS = {
    "garbage": (b"\x17" * 40, Status.PROTOCOL_ERROR),
    "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Status.PROTOCOL_ERROR),
    "wrong version": (HEADER.pack(MAGIC, 99, 1, 0, 0, 0, 1, 0), Status.PROTOCOL_ERROR),
    "4 GiB header": (HEADER.pack(MAGIC, PROTOCOL_VERSION, 1, 0, 0, 0, 7, 0xFFFFFFFF), Status.TOO_LARGE),
    "response to a server": (encode_frame(Frame(2, 3, b"")), Status.PROTOCOL_ERROR),
}


async def exchange(address: tuple[str, int], payload: bytes, *, half_close: bool = False) -> list[Frame]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(payload)
    if half_close:
        writer.write_eof()
    codec = FrameCodec()
    frames: list[Frame] = []
    while not frames:
        data = await reader.read(65536)
        if not data:
            break
        codec.feed(data)
        frames.extend(codec.frames())
    if not half_close:
        # The server must close a connection it cannot trust any more.
        while await reader.read(65536):
            pass
    writer.close()
    await writer.wait_closed()
    return frames


def run_against(stage: str, scenario: Callable[[Any], Any]) -> None:
    cli = importlib.import_module(f"stages.{stage}.cli")

    async def main() -> None:
        async with asyncio.timeout(20):
            server = cli.new_server()
            async with server:
                await scenario(server)

    asyncio.run(main())


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gets_a_clear_error_and_only_its_connection_closes(stage: str, name: str) -> None:
    payload, status = BAD_INPUTS[name]

    async def scenario(server: Any) -> None:
        [answer] = await exchange(server.address, payload)
        assert answer.status == status and answer.body  # a message, not just a code
        [good] = await exchange(server.address, STAGES[stage](), half_close=True)
        assert good.status == Status.OK

    run_against(stage, scenario)


@pytest.mark.parametrize("stage", STAGES)
def test_half_a_frame_then_goodbye_costs_nothing(stage: str) -> None:
    async def scenario(server: Any) -> None:
        for _ in range(10):
            _, writer = await asyncio.open_connection(*server.address)
            writer.write(STAGES[stage]()[:9])
            writer.close()
            await writer.wait_closed()
        [good] = await exchange(server.address, STAGES[stage](), half_close=True)
        assert good.status == Status.OK
        async with asyncio.timeout(5):
            while server.connection_count:
                await asyncio.sleep(0.01)

    run_against(stage, scenario)
