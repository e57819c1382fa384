"""Deadlines that travel, and cancelled work (v3.2): the frames, then real providers."""

from __future__ import annotations

import abc
import asyncio
import threading
import time

import pytest
from support import run

from stages.harness.threads import BackgroundServer
from stages.v1_0.errors import RemoteProtocolError
from stages.v1_0.protocol import Frame, FrameCodec
from stages.v2_0.api import api_spec, rpc_api
from stages.v2_0.serializers import PickleSerializer, TypeRegistry
from stages.v2_1 import Client as DirectClient
from stages.v2_1.protocol import FrameType
from stages.v3_x import (
    CallPolicy,
    Client,
    ClientConfig,
    ProviderInfo,
    RpcTimeoutError,
    Server,
    ServerConfig,
    StaticRegistry,
    deadline,
)
from stages.v3_x.errors import Status
from stages.v3_x.incident import IncidentApi

# -- the frames --------------------------------------------------------------------------------


def test_a_timed_request_carries_the_milliseconds_before_the_request_body() -> None:
    request = Frame(FrameType.REQUEST, 9, b"body", 3)
    sent = deadline.timed(request, 1.2346)
    assert (sent.type, sent.request_id, sent.codec) == (deadline.TIMED_REQUEST, 9, 3)
    assert sent.body == (1235).to_bytes(4, "big") + b"body"
    assert deadline.untimed(sent) == (request, 1.235)
    assert deadline.timed(request, -5).body[:4] == bytes(4)  # already late: 0
    assert deadline.timed(request, 1e12).body[:4] == b"\xff" * 4  # capped, not wrapped


def test_a_timed_request_too_short_for_its_milliseconds_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError, match="needs 4 bytes"):
        deadline.untimed(Frame(deadline.TIMED_REQUEST, 1, b"\x00\x01", 2))


def test_the_cancel_frame_is_a_header_with_the_request_id() -> None:
    codec = FrameCodec()
    codec.feed(deadline.cancel_frame(77))
    assert codec.next_frame() == Frame(deadline.CANCEL, 77)


# -- against real providers --------------------------------------------------------------------


@rpc_api(namespace="tests")
class SlowApi(abc.ABC):
    @abc.abstractmethod
    def left(self) -> float | None: ...

    @abc.abstractmethod
    def wait(self, seconds: float) -> str: ...


class SlowImpl(SlowApi):
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def left(self) -> float | None:
        return deadline.remaining()

    async def wait(self, seconds: float) -> str:  # type: ignore[override]
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "done"


def provider(impl: SlowImpl) -> BackgroundServer[Server]:
    def build() -> Server:
        server = Server(ServerConfig(), registry=StaticRegistry([]))
        server.bind(SlowApi, impl, inline=("left",))
        server.enable_incidents()
        return server
    return BackgroundServer(build)


def listed(bg: BackgroundServer[Server], features: tuple[str, ...] = deadline.FEATURES) -> ProviderInfo:
    host, port = bg.address
    return ProviderInfo(host=host, port=port, features=features)


def test_the_time_left_reaches_the_implementation_of_a_provider_that_understands_it() -> None:
    async def scenario() -> None:
        with provider(SlowImpl()) as bg:
            for features, expect_deadline in ((deadline.FEATURES, True), ((), False)):
                client = Client(StaticRegistry([listed(bg, features)]), ClientConfig(timeout=2.0))
                left = await client.async_proxy(SlowApi).left()
                if expect_deadline:
                    assert left is not None and 1.5 < left <= 2.0, left
                else:  # a provider not listed with the feature gets plain requests
                    assert left is None
                await client.aclose()

    run(scenario)


def test_a_call_whose_caller_gave_up_stops_on_the_provider() -> None:
    async def scenario() -> None:
        impl = SlowImpl()
        with provider(impl) as bg:
            client = Client(StaticRegistry([listed(bg)]), ClientConfig(timeout=0.3))
            start = time.monotonic()
            with pytest.raises(RpcTimeoutError):
                await client.async_proxy(SlowApi).wait(30)
            # The provider cancels it at the same deadline (and the client's CANCEL too).
            while not impl.cancelled.is_set():
                assert time.monotonic() - start < 3, "the call still runs on the provider"
                await asyncio.sleep(0.02)
            await client.aclose()

    run(scenario)


def test_the_losers_of_a_forked_call_are_cancelled_on_their_providers() -> None:
    async def scenario() -> None:
        with provider(SlowImpl()) as slow, provider(SlowImpl()) as fast:
            await make_slow(slow)
            client = Client(StaticRegistry([listed(slow), listed(fast)]),
                            ClientConfig(timeout=5.0))
            client.set_policy(SlowApi, CallPolicy(mode="forking", idempotent=True, forks=2))
            start = time.monotonic()
            assert await client.async_proxy(SlowApi).wait(0.1) == "done"  # the fast one
            assert time.monotonic() - start < 1.5
            assert slow.server is not None
            address = api_spec(SlowApi).address
            while slow.server.calls_by_api[address]:  # the slow fork, cancelled by CANCEL
                assert time.monotonic() - start < 1.5, "the slower fork still runs"
                await asyncio.sleep(0.02)
            assert slow.server.cancelled == 1
            await client.aclose()

    run(scenario)


async def make_slow(bg: BackgroundServer[Server]) -> None:
    """Stage a slow incident: each call of the provider starts 2 s late."""
    client = DirectClient(*bg.address)
    await client.async_proxy(IncidentApi).slow(2.0, 30)
    await client.aclose()


def test_a_call_that_arrives_with_no_time_left_is_not_run() -> None:
    async def scenario() -> None:
        impl = SlowImpl()
        with provider(impl) as bg:
            client = DirectClient(*bg.address)
            spec = api_spec(SlowApi)
            serializer = PickleSerializer(TypeRegistry.of([spec]))
            request = client.request_frame(spec, "wait", (0.0,), {}, serializer)
            answer = await client.endpoint.exchange(deadline.timed(request, 0), 2.0)
            assert answer.status == Status.UNAVAILABLE and b"not run" in answer.body
            await client.aclose()

    run(scenario)
