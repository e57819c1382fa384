"""Answers are matched to calls by request id, whatever order they come back in.

The server here is a raw asyncio one that reads every request first and then answers them in an
order of its choosing (reversed, shuffled, evens before odds), in one write or cut into small
pieces, with an answer nobody asked for and a duplicate mixed in. Each caller must get the answer
to its own call, and the stray answers must be dropped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import run, until

from stages.v2_0.serializers import Outcome, PickleSerializer
from stages.v2_0.user_stub import InventoryApi
from stages.v2_1 import Client, ClientConfig, Frame, FrameCodec, FrameType
from stages.v2_1.protocol import PONG_FRAME, encode_frame

N = 40
SERIALIZER = PickleSerializer()

Order = Callable[[list[Frame]], list[Frame]]

ORDERS: dict[str, Order] = {
    "reversed": lambda frames: frames[::-1],
    "shuffled": lambda frames: random.Random(7).sample(frames, len(frames)),
    "evens first": lambda frames: frames[::2] + frames[1::2],
    "last first": lambda frames: frames[-1:] + frames[:-1],
}


def answer(request: Frame, *, request_id: int | None = None) -> bytes:
    """The answer to an ``echo`` request: its argument back, under its (or another) id, in
    standard pickle (which v2.1's pickle with records, id 3, reads too) and the request's codec."""
    [value] = SERIALIZER.decode_invocation(request.body).args
    body = SERIALIZER.encode_outcome(Outcome(value=value))
    rid = request.request_id if request_id is None else request_id
    return encode_frame(Frame(FrameType.RESPONSE, rid, body, request.codec))


@asynccontextmanager
async def answering_server(order: Order, *, piece: int | None = None,
                           strays: bool = False) -> AsyncIterator[tuple[str, int]]:
    """A server that reads ``N`` requests, then answers all of them in ``order``: in one write,
    or in pieces of ``piece`` bytes. With ``strays``, an answer to an id nobody used comes
    first and a second answer to the first request comes last."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = FrameCodec()
        requests: list[Frame] = []
        while len(requests) < N and (data := await reader.read(65536)):
            codec.feed(data)
            for frame in codec.frames():
                if frame.type == FrameType.PING:
                    writer.write(PONG_FRAME)
                else:
                    requests.append(frame)
        if len(requests) == N:
            answers = [answer(r) for r in order(requests)]
            if strays:
                unused = max(r.request_id for r in requests) + 1000
                answers = [answer(requests[0], request_id=unused), *answers, answer(requests[0])]
            stream = b"".join(answers)
            step = piece or len(stream)
            for start in range(0, len(stream), step):
                writer.write(stream[start:start + step])
                await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[:2]


async def call_all(address: tuple[str, int]) -> tuple[list[Any], Client]:
    client = Client(*address, ClientConfig(timeout=10))
    echo = client.async_proxy(InventoryApi, serializer="pickle").echo
    results = await asyncio.gather(*(echo((i, f"payload-{i}")) for i in range(N)))
    return results, client


@pytest.mark.parametrize("order", ORDERS)
def test_answers_in_any_order_reach_their_own_callers(order: str) -> None:
    async def scenario() -> None:
        async with answering_server(ORDERS[order]) as address:
            results, client = await call_all(address)
            assert results == [(i, f"payload-{i}") for i in range(N)]
            assert client.connection is not None and client.connection.pending == {}
            await client.aclose()

    run(scenario)


@pytest.mark.parametrize("piece", [1, 7, 100])
def test_answers_out_of_order_and_cut_into_pieces(piece: int) -> None:
    async def scenario() -> None:
        async with answering_server(ORDERS["shuffled"], piece=piece) as address:
            results, client = await call_all(address)
            assert results == [(i, f"payload-{i}") for i in range(N)]
            await client.aclose()

    run(scenario)


def test_an_answer_nobody_asked_for_and_a_duplicate_are_dropped() -> None:
    async def scenario() -> None:
        async with answering_server(ORDERS["reversed"], strays=True) as address:
            results, client = await call_all(address)
            assert results == [(i, f"payload-{i}") for i in range(N)]
            conn = client.connection
            assert conn is not None
            # The duplicate is the last frame written: wait for it (the stray came first).
            await until(lambda: conn.late_answers >= 2, what="both stray answers read")
            assert conn.late_answers == 2 and conn.usable and conn.pending == {}
            await client.aclose()

    run(scenario)
