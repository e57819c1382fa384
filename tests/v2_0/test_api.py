"""Interfaces, addresses and binding."""

from __future__ import annotations

import abc

import pytest

from stages.v2_0 import ApiDefinitionError, Server, address_of, api_spec, rpc_api
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.user_stub import InventoryApi, User, UserApi, UserNotFound


def test_address_is_namespace_plus_fully_qualified_name() -> None:
    assert address_of(UserApi) == "walkthrough/stages.v2_0.user_stub.api.UserApi"
    assert address_of(InventoryApi).startswith("walkthrough/stages.v2_0.user_stub.api.")


def test_spec_lists_public_methods_with_their_signatures() -> None:
    spec = api_spec(UserApi)
    assert sorted(spec.methods) == ["find_users", "get_user"]
    assert str(spec.methods["find_users"].signature).startswith("(prefix: 'str', *, limit: 'int' = 10)")
    assert spec.types == (User,) and spec.exceptions == (UserNotFound,)


def test_private_methods_are_never_part_of_an_api() -> None:
    @rpc_api(namespace="t")
    class Api(abc.ABC):
        def visible(self) -> int: ...
        def _hidden(self) -> int: ...

    assert list(api_spec(Api).methods) == ["visible"]


@pytest.mark.parametrize("namespace", ["", "has space", "/slash", 3])
def test_bad_namespaces_are_refused(namespace: object) -> None:
    with pytest.raises(ApiDefinitionError):
        rpc_api(namespace=namespace)  # type: ignore[arg-type]


def test_interface_rules() -> None:
    with pytest.raises(ApiDefinitionError, match="no public methods"):
        @rpc_api(namespace="t")
        class Empty:
            pass
    with pytest.raises(ApiDefinitionError, match="not an Exception"):
        rpc_api(namespace="t", exceptions=(int,))  # type: ignore[arg-type]
    with pytest.raises(ApiDefinitionError, match="not an RPC interface"):
        api_spec(UserApiImpl)  # a subclass of an interface is not itself one


def test_bind_checks_the_implementation_at_bind_time() -> None:
    server = Server()
    assert server.bind(UserApi, UserApiImpl()) == address_of(UserApi)
    with pytest.raises(ApiDefinitionError, match="already bound"):
        server.bind(UserApi, UserApiImpl())

    class Partial:  # duck-typed, but missing find_users
        def get_user(self, user_id: int) -> User: ...

    with pytest.raises(ApiDefinitionError, match="does not implement UserApi.find_users"):
        Server().bind(UserApi, Partial())

    class Async:
        async def get_user(self, user_id: int) -> User: ...
        def find_users(self, prefix: str, *, limit: int = 10) -> list[User]: ...

    with pytest.raises(ApiDefinitionError, match="async"):
        Server().bind(UserApi, Async())
    with pytest.raises(ApiDefinitionError, match="use Server.bind"):
        Server().register("userService", {})


def test_the_v1_request_line_is_refused_by_the_v2_client_too() -> None:
    import asyncio

    from stages.v2_0 import Client

    with pytest.raises(ApiDefinitionError, match="use client.proxy"):
        asyncio.run(Client("127.0.0.1", 1).call("userService", "getUser", id=1))
