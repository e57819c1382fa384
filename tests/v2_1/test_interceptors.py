"""One route for every call, and the interceptor chain around it; the per-server Endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from support import run

from stages.harness.threads import BackgroundServer
from stages.v1_0.protocol import Frame, FrameType
from stages.v2_0.api import api_spec
from stages.v2_0.user_stub import User, UserApi, UserNotFound
from stages.v2_1 import Client, ClientConfig, RpcTimeoutError
from stages.v2_1.cli import new_server
from stages.v2_1.client import Call, Endpoint, Proceed
from stages.v2_1.timer_stub import TimerApi


class Recorder:
    """Records every call it sees, and what came back, then lets it go on."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def __call__(self, call: Call, proceed: Proceed) -> Any:
        self.log.append(f"{self.name} > {call.method}{call.args}")
        try:
            value = await proceed(call)
        except Exception as exc:
            self.log.append(f"{self.name} < {type(exc).__name__}")
            raise
        self.log.append(f"{self.name} < {type(value).__name__}")
        return value


def test_blocking_and_async_calls_take_the_same_route_through_the_interceptors() -> None:
    log: list[str] = []
    with BackgroundServer(new_server) as bg, \
            Client(*bg.address, interceptors=[Recorder("outer", log),
                                              Recorder("inner", log)]) as client:
        assert client.proxy(UserApi).get_user(7).id == 7
        with pytest.raises(UserNotFound):
            client.proxy(UserApi).get_user(0)
        assert log == ["outer > get_user(7,)", "inner > get_user(7,)", "inner < User",
                       "outer < User",
                       "outer > get_user(0,)", "inner > get_user(0,)", "inner < UserNotFound",
                       "outer < UserNotFound"]

    log.clear()

    async def scenario() -> None:
        async with asyncio.timeout(10):
            with BackgroundServer(new_server) as bg:
                client = Client(*bg.address, interceptors=[Recorder("only", log)])
                users = client.async_proxy(UserApi)
                assert [u.id for u in await asyncio.gather(users.get_user(1),
                                                           users.get_user(2))] == [1, 2]
                await client.aclose()

    run(scenario)
    assert sorted(log) == sorted(["only > get_user(1,)", "only > get_user(2,)",
                                  "only < User", "only < User"])


def test_an_interceptor_may_change_a_call_or_answer_it_without_sending() -> None:
    class Cache:
        def __init__(self) -> None:
            self.sent = 0

        async def __call__(self, call: Call, proceed: Proceed) -> Any:
            if call.method == "get_user" and call.args == (42,):
                return User(42, "cached", "cached@example.org")  # never reaches the server
            self.sent += 1
            return await proceed(call)

    class ShortDeadline:
        async def __call__(self, call: Call, proceed: Proceed) -> Any:
            return await proceed(dataclasses.replace(call, timeout=0.05))

    cache = Cache()
    with BackgroundServer(new_server) as bg, \
            Client(*bg.address, interceptors=[cache, ShortDeadline()]) as client:
        assert client.proxy(UserApi).get_user(42).name == "cached"
        assert client.connects == 0 and cache.sent == 0  # nothing was sent, no connection made
        assert client.proxy(UserApi).get_user(5).id == 5
        with pytest.raises(RpcTimeoutError, match="within 0.05 s"):
            client.proxy(TimerApi).sleep(1.0)  # the interceptor's deadline, not the default 5 s
        assert cache.sent == 2


def test_an_endpoint_owns_one_servers_connection() -> None:
    async def scenario() -> None:
        async with asyncio.timeout(10):
            with BackgroundServer(new_server) as bg:
                endpoint = Endpoint(bg.address, ClientConfig())
                assert endpoint.connection is None and not endpoint.usable
                client = Client(*bg.address)  # borrowed for request_frame: encode a call
                ser = client._prepare(UserApi, None)[1]
                request = client.request_frame(api_spec(UserApi), "get_user", (3,), {}, ser)
                answer = await endpoint.exchange(request, 5.0)
                assert isinstance(answer, Frame) and answer.type == FrameType.RESPONSE
                assert client.read_outcome(answer, ser).id == 3
                assert endpoint.usable and endpoint.connects == 1
                await endpoint.aclose()
                assert endpoint.connection is None

    run(scenario)
