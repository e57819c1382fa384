"""Exceptions raised by v2.1 methods, across the wire: over both serializers, from plain methods
(run in the server's thread pool, or inline on its event loop when bound with ``inline=``) and
from coroutine methods (run as tasks); each way has its own path from the exception to the answer.

A declared exception arrives as itself, a built-in one as itself, any other one as a
RemoteException that names its type and keeps its message. A method that raises never answers
OK, and the connection serves on.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support import run

from stages.v2_0.serializers import qualified_name
from stages.v2_1 import (
    Client,
    ClientConfig,
    RemoteError,
    RemoteException,
    Server,
    ServerConfig,
    Status,
    rpc_api,
)


class Declared(Exception):
    """Declared by the interface: rebuilt on the caller's side from its args."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(code, why)
        self.code = code


class Undeclared(RuntimeError):
    """Not declared: the caller cannot rebuild it."""


@rpc_api(namespace="tests", exceptions=(Declared,))
class FailingApi(abc.ABC):
    @abc.abstractmethod
    def declared(self, code: int) -> int: ...

    @abc.abstractmethod
    def undeclared(self, text: str) -> int: ...

    @abc.abstractmethod
    def builtin(self, key: str) -> int: ...

    @abc.abstractmethod
    def fine(self, value: int) -> int: ...


class PlainFailing(FailingApi):
    def declared(self, code: int) -> int:
        raise Declared(code, f"code {code} refused")

    def undeclared(self, text: str) -> int:
        raise Undeclared(text)

    def builtin(self, key: str) -> int:
        return {}[key]  # type: ignore[no-any-return]

    def fine(self, value: int) -> int:
        return value + 1


class AsyncFailing(FailingApi):
    """The same, as coroutines that wait before they raise: their answers leave from a task."""

    async def declared(self, code: int) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        raise Declared(code, f"code {code} refused")

    async def undeclared(self, text: str) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        raise Undeclared(text)

    async def builtin(self, key: str) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        return {}[key]  # type: ignore[no-any-return]

    async def fine(self, value: int) -> int:  # type: ignore[override]
        await asyncio.sleep(0)
        return value + 1


#: How each kind of implementation is bound: (class, keyword arguments of Server.bind).
IMPLEMENTATIONS: dict[str, tuple[type[FailingApi], dict[str, Any]]] = {
    "plain": (PlainFailing, {}),
    "inline": (PlainFailing, {"inline": True}),
    "async": (AsyncFailing, {}),
}


def bind(server: Server, kind: str) -> None:
    cls, how = IMPLEMENTATIONS[kind]
    server.bind(FailingApi, cls(), **how)
SERIALIZERS = ["pickle", "protobuf"]


@asynccontextmanager
async def serving(kind: str) -> AsyncIterator[Client]:
    server = Server(ServerConfig())
    bind(server, kind)
    async with server:
        client = Client(*server.address, ClientConfig())
        try:
            yield client
        finally:
            await client.aclose()


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_declared_exception_arrives_as_itself(kind: str, serializer: str) -> None:
    async def scenario() -> None:
        async with serving(kind) as client:
            api = client.async_proxy(FailingApi, serializer=serializer)
            with pytest.raises(Declared) as info:
                await api.declared(7)
            assert type(info.value) is Declared
            assert info.value.args == (7, "code 7 refused") and info.value.code == 7
            assert await api.fine(1) == 2  # the connection serves on
            assert client.connects == 1

    run(scenario)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_an_undeclared_exception_arrives_as_a_remote_exception(kind: str, serializer: str) -> None:
    async def scenario() -> None:
        async with serving(kind) as client:
            api = client.async_proxy(FailingApi, serializer=serializer)
            with pytest.raises(RemoteException) as info:
                await api.undeclared("the disk is not mounted")
            exc = info.value
            assert exc.remote_type == qualified_name(Undeclared)
            assert exc.status == Status.INTERNAL
            assert exc.message == f"{qualified_name(Undeclared)}: the disk is not mounted"
            assert await api.fine(2) == 3

    run(scenario)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_built_in_exception_arrives_as_itself(kind: str, serializer: str) -> None:
    async def scenario() -> None:
        async with serving(kind) as client:
            api = client.async_proxy(FailingApi, serializer=serializer)
            with pytest.raises(KeyError) as info:
                await api.builtin("sku-9")
            assert type(info.value) is KeyError and info.value.args == ("sku-9",)
            assert await api.fine(3) == 4

    run(scenario)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_many_failing_and_succeeding_calls_in_flight_each_get_their_own_outcome(kind: str) -> None:
    async def scenario() -> None:
        async with serving(kind) as client:
            api = client.async_proxy(FailingApi)
            calls = [api.declared(i) if i % 3 == 0 else api.builtin(f"k{i}") if i % 3 == 1
                     else api.fine(i) for i in range(60)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            for i, result in enumerate(results):
                if i % 3 == 0:
                    assert type(result) is Declared and result.args == (i, f"code {i} refused")
                elif i % 3 == 1:
                    assert type(result) is KeyError and result.args == (f"k{i}",)
                else:
                    assert result == i + 1

    run(scenario)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_blocking_proxy_gets_the_same_exceptions(kind: str) -> None:
    async def scenario() -> None:
        server = Server(ServerConfig())
        bind(server, kind)
        async with server:
            def blocking() -> None:
                with Client(*server.address) as client:
                    api = client.proxy(FailingApi)
                    assert api.fine(0) == 1  # connected: later calls take the fast path
                    with pytest.raises(Declared) as declared:
                        api.declared(5)
                    assert declared.value.args == (5, "code 5 refused")
                    with pytest.raises(RemoteException) as undeclared:
                        api.undeclared("no")
                    assert undeclared.value.remote_type == qualified_name(Undeclared)
                    with pytest.raises(KeyError):
                        api.builtin("x")
                    assert api.fine(1) == 2

            await asyncio.to_thread(blocking)

    run(scenario)


def test_a_remote_exception_is_an_rpc_error_with_a_status() -> None:
    # What a caller that does not know Undeclared can rely on.
    exc = RemoteException("pkg.Boom", "boom", "trace")
    assert isinstance(exc, RemoteError) and exc.status == Status.INTERNAL
