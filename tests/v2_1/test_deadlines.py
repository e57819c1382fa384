"""Every call fails at its own deadline: one timer serves all the calls of a connection, and it
must be re-armed for the next deadline each time it fires.

The server reads requests and answers only those that ask for an answer, so the others can only
end by their deadlines. Each must fail with RpcTimeoutError no sooner than its own timeout and
not much later: not all at the first deadline, not never.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import run

from stages.v2_0.serializers import Outcome, PickleSerializer
from stages.v2_0.user_stub import InventoryApi
from stages.v2_1 import (
    Client,
    ClientConfig,
    Frame,
    FrameCodec,
    FrameType,
    RpcTimeoutError,
    rpc_timeout,
)
from stages.v2_1.protocol import encode_frame

SERIALIZER = PickleSerializer()
#: How late a deadline may fire: timer tick plus a busy machine, with a good margin. The
#: deadlines below are further apart than this, so a timer armed for the wrong one shows.
LATE = 0.15


@asynccontextmanager
async def selective_server() -> AsyncIterator[tuple[str, int]]:
    """A server that answers ``echo("answer")`` at once and never answers anything else."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = FrameCodec()
        while data := await reader.read(65536):
            codec.feed(data)
            for frame in codec.frames():
                if frame.type != FrameType.REQUEST:
                    continue
                if SERIALIZER.decode_invocation(frame.body).args == ("answer",):
                    body = SERIALIZER.encode_outcome(Outcome(value="answered"))
                    writer.write(encode_frame(Frame(FrameType.RESPONSE, frame.request_id, body,
                                                    frame.codec)))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[:2]


async def timed_calls(plan: list[tuple[float, str]]) -> list[tuple[float, float, Any]]:
    """Start the calls of ``plan`` (timeout, argument) together on one connection; return, for
    each, its timeout, when it ended (seconds after the start) and its result or exception."""
    async with selective_server() as address:
        # Heartbeat far away: nothing but the deadlines may end these calls.
        client = Client(*address, ClientConfig(timeout=30, heartbeat_interval=30))
        echo = client.async_proxy(InventoryApi, serializer="pickle").echo
        assert await echo("answer") == "answered"  # connected before the clock starts
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(timeout: float, arg: str) -> tuple[float, float, Any]:
            with rpc_timeout(timeout):
                try:
                    result: Any = await echo(arg)
                except RpcTimeoutError as exc:
                    result = exc
            return timeout, loop.time() - start, result

        try:
            # The longest call is bounded too: a deadline that never fires must fail the test,
            # not hang it.
            async with asyncio.timeout(max(t for t, _ in plan) + 2.0):
                return await asyncio.gather(*(one(t, arg) for t, arg in plan))
        finally:
            await client.aclose()


def check_each_failed_at_its_own_deadline(ended: list[tuple[float, float, Any]]) -> None:
    for timeout, at, result in ended:
        assert isinstance(result, RpcTimeoutError), (timeout, result)
        assert f"within {timeout:.3g} s" in str(result)
        assert timeout - 0.002 <= at < timeout + LATE, (timeout, at)


@pytest.mark.parametrize("order", ["earliest first", "latest first", "mixed"])
def test_unanswered_calls_fail_each_at_its_own_deadline(order: str) -> None:
    timeouts = {"earliest first": [0.1, 0.3, 0.5, 0.7],
                "latest first": [0.7, 0.5, 0.3, 0.1],
                "mixed": [0.3, 0.7, 0.1, 0.5]}[order]
    ended: list[tuple[float, float, Any]] = []

    async def scenario() -> None:
        ended.extend(await timed_calls([(t, "silence") for t in timeouts]))

    run(scenario)
    check_each_failed_at_its_own_deadline(ended)


def test_calls_sharing_a_deadline_all_fail_at_it() -> None:
    ended: list[tuple[float, float, Any]] = []

    async def scenario() -> None:
        ended.extend(await timed_calls([(0.1, "silence")] * 5 + [(0.3, "silence")] * 5))

    run(scenario)
    check_each_failed_at_its_own_deadline(ended)


def test_answered_calls_between_unanswered_ones_do_not_stop_the_timer() -> None:
    # The answered calls' deadlines are still filed when the timer fires for the others: they
    # must be skipped, and the timer armed for the next unanswered call behind them. The
    # earliest deadline of all is an answered call's, so the timer first fires for nobody.
    ended: list[tuple[float, float, Any]] = []

    async def scenario() -> None:
        ended.extend(await timed_calls([(0.05, "answer"), (0.1, "silence"), (0.15, "answer"),
                                        (0.2, "answer"), (0.3, "silence"), (0.35, "answer"),
                                        (0.5, "silence")]))

    run(scenario)
    answered = [(t, at, r) for t, at, r in ended if not isinstance(r, RpcTimeoutError)]
    assert [r for _, _, r in answered] == ["answered"] * 4
    assert all(at < 0.1 for _, at, _ in answered)
    check_each_failed_at_its_own_deadline([e for e in ended if e not in answered])
    assert [t for t, _, r in ended if isinstance(r, RpcTimeoutError)] == [0.1, 0.3, 0.5]


def test_a_new_earlier_call_re_arms_the_timer_sooner() -> None:
    # A long call is waiting (the timer is armed for it); a short call made later must not wait
    # for the long one's deadline.
    ended: list[tuple[float, float, Any]] = []

    async def scenario() -> None:
        async with selective_server() as address:
            client = Client(*address, ClientConfig(timeout=30, heartbeat_interval=30))
            echo = client.async_proxy(InventoryApi, serializer="pickle").echo
            assert await echo("answer") == "answered"
            loop = asyncio.get_running_loop()
            with rpc_timeout(1.0):
                long = asyncio.ensure_future(echo("silence"))
            await asyncio.sleep(0)  # the long call is sent and its deadline filed
            start = loop.time()
            with rpc_timeout(0.1), pytest.raises(RpcTimeoutError):
                await echo("silence")
            ended.append((0.1, loop.time() - start, RpcTimeoutError("within 0.1 s")))
            long.cancel()
            await client.aclose()

    run(scenario)
    check_each_failed_at_its_own_deadline(ended)


def test_tidying_the_deadlines_of_answered_calls_keeps_those_still_waiting() -> None:
    # Deadlines of answered calls stay filed until they come up; once they outnumber the
    # waiting calls by far (over 1024 more), the next call tidies them away. The deadline of a
    # call still waiting must survive that, or the call would wait for ever. (The deadline is
    # generous: over a thousand calls go by before it, and on a busy machine they take a while.)
    async def scenario() -> None:
        async with selective_server() as address:
            client = Client(*address, ClientConfig(timeout=30, heartbeat_interval=30))
            echo = client.async_proxy(InventoryApi, serializer="pickle").echo
            assert await echo("answer") == "answered"
            loop = asyncio.get_running_loop()
            start = loop.time()
            with rpc_timeout(1.5):
                waiting = asyncio.ensure_future(echo("silence"))
            answers = await asyncio.gather(*(echo("answer") for _ in range(1050)))
            assert answers == ["answered"] * 1050
            assert not waiting.done(), "the machine is too slow for this test's 1.5 s deadline"
            assert await echo("answer") == "answered"  # this call tidies the deadlines up
            async with asyncio.timeout(3):
                with pytest.raises(RpcTimeoutError, match="within 1.5 s"):
                    await waiting
            assert loop.time() - start >= 1.5 - 0.002
            await client.aclose()

    run(scenario)
