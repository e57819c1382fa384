"""v2.0 on real loopback sockets, for both serializers: proxies, values, exceptions, bad input."""

from __future__ import annotations

import abc
import asyncio
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from stages.harness.threads import BackgroundServer
from stages.v1_0.client import Client as RawClient
from stages.v2_0 import (
    Client,
    ClientConfig,
    ConfigError,
    Frame,
    FrameType,
    Invocation,
    PickleSerializer,
    ProtobufSerializer,
    RemoteError,
    RemoteException,
    SerializationError,
    Server,
    ServerConfig,
    Status,
    address_of,
    rpc_api,
)
from stages.v2_0.cli import new_server
from stages.v2_0.user_stub import (
    Dimensions,
    InventoryApi,
    Item,
    OutOfStock,
    Receipt,
    User,
    UserApi,
    UserNotFound,
)

SERIALIZERS = ["pickle", "protobuf"]


@rpc_api(namespace="tests")
class OddApi(abc.ABC):
    @abc.abstractmethod
    def unencodable(self) -> Any: ...


class OddImpl(OddApi):
    def unencodable(self) -> Any:
        return lambda: None  # neither serializer can encode a function


def make_server(config: ServerConfig | None = None) -> Server:
    server = new_server(config)
    server.bind(OddApi, OddImpl())
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer[Server]]:
    # A learner's server: it sends the remote traceback along (off by default).
    with BackgroundServer(lambda: make_server(ServerConfig(send_tracebacks=True))) as bg:
        yield bg


@pytest.fixture
def client(server: BackgroundServer[Server]) -> Iterator[Client]:
    with Client(*server.address) as c:
        yield c


def raw_call(address: tuple[str, int], frame: Frame) -> Frame:
    async def go() -> Frame:
        return await RawClient(*address).exchange(frame)
    return asyncio.run(go())


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_get_user_through_the_proxy(client: Client, ser: str) -> None:
    user_api = client.proxy(UserApi, serializer=ser)
    assert isinstance(user_api, UserApi)  # the proxy *is* a UserApi
    assert user_api.get_user(123456) == User(123456, "Alan Turing", "alan.123456@example.org")
    assert user_api.find_users("A", limit=5) == [User(1, "Alan Turing", "alan.1@example.org"),
                                                User(5, "Ada Lovelace", "ada.5@example.org")]


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_every_type_of_the_demo_apis_round_trips(client: Client, ser: str) -> None:
    inventory = client.proxy(InventoryApi, serializer=ser)
    item = Item("pen-2", "Pen", 1.25, quantity=4, active=True, thumbnail=bytes(range(256)),
                tags=["ink", "blue"], attributes={"colour": "blue"},
                dimensions=Dimensions(1.0, 14.0, 1.0), note=None)
    receipt = inventory.order([item], coupon="HALF", express=False)
    assert isinstance(receipt, Receipt) and receipt.items == [item] and receipt.total == 2.5
    assert receipt.stock_left["pen-2"] == inventory.stock("pen-2")
    values = [0, -1, 2**62, 2**80, 3.5, float("inf"), "", "héllo", b"", b"\x00\xff", True, False,
              None, [], [1, [2, [3]]], {}, {"a": {"b": [None]}}, {1: "int key"}]
    for value in values:
        assert inventory.echo(value) == value


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_async_proxy_from_the_same_machinery(server: BackgroundServer[Server], ser: str) -> None:
    async def go() -> list[User]:
        api = Client(*server.address).async_proxy(UserApi, serializer=ser)
        return await asyncio.gather(*(api.get_user(i) for i in range(1, 21)))

    assert [u.id for u in asyncio.run(go())] == list(range(1, 21))


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_exceptions_cross_the_wire(client: Client, ser: str) -> None:
    user_api = client.proxy(UserApi, serializer=ser)
    inventory = client.proxy(InventoryApi, serializer=ser)
    with pytest.raises(UserNotFound) as declared:  # declared by the interface: itself
        user_api.get_user(0)
    assert declared.value.user_id == 0 and str(declared.value) == "no user with id 0"
    assert any("Remote traceback" in n for n in declared.value.__notes__)
    with pytest.raises(OutOfStock, match="wanted 1000"):
        inventory.order([Item("book-1", "b", 1.0, quantity=1000)])
    with pytest.raises(ValueError, match="limit must be >= 0"):  # built-in: itself
        user_api.find_users("A", limit=-1)
    with pytest.raises(RemoteException) as unknown:  # undeclared: a remote error
        inventory.audit()
    assert unknown.value.remote_type == "stages.v2_0.provider.AuditLogUnavailable"
    assert "not mounted" in unknown.value.message
    assert "Traceback" in (unknown.value.details or "")


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_deployed_server_sends_type_and_message_but_no_traceback(ser: str) -> None:
    with BackgroundServer(make_server) as bg, Client(*bg.address) as client:
        assert bg.server is not None and bg.server.config.send_tracebacks is False  # default
        user_api = client.proxy(UserApi, serializer=ser)
        inventory = client.proxy(InventoryApi, serializer=ser)
        with pytest.raises(UserNotFound) as declared:
            user_api.get_user(0)
        assert str(declared.value) == "no user with id 0"
        assert not getattr(declared.value, "__notes__", [])
        with pytest.raises(RemoteException) as unknown:
            inventory.audit()
        assert unknown.value.remote_type == "stages.v2_0.provider.AuditLogUnavailable"
        assert unknown.value.details is None
        assert ".py" not in str(unknown.value) and "/" not in unknown.value.message


def test_calls_are_checked_locally_before_anything_is_sent(client: Client) -> None:
    user_api = client.proxy(UserApi)
    with pytest.raises(AttributeError):
        user_api.delete_user(1)  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="get_user"):
        user_api.get_user()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="find_users"):
        user_api.find_users("A", 3)  # type: ignore[misc]  # limit is keyword-only
    with pytest.raises(SerializationError, match="builtins.set"):
        client.proxy(InventoryApi, serializer="protobuf").echo({1, 2})


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_result_the_serializer_cannot_encode_is_a_clear_error(client: Client, ser: str) -> None:
    odd = client.proxy(OddApi, serializer=ser)
    with pytest.raises(RemoteError) as info:
        odd.unencodable()
    assert info.value.status == Status.INTERNAL
    assert f"cannot encode the result of unencodable() with {ser}" in info.value.message
    assert client.proxy(UserApi, serializer=ser).get_user(1).id == 1  # the server lives on


@pytest.mark.parametrize("serializer_cls", [PickleSerializer, ProtobufSerializer])
@pytest.mark.parametrize("invocation, status, message", [
    (Invocation("walkthrough/nope.Api", "get_user", (1,)), Status.NOT_FOUND, "no API is bound"),
    (Invocation(address_of(UserApi), "delete_user", (1,)), Status.NOT_FOUND, "has no method 'delete_user'"),
    (Invocation(address_of(UserApi), "__init__", ()), Status.NOT_FOUND, "has no method '__init__'"),
    (Invocation(address_of(UserApi), "_secret", ()), Status.NOT_FOUND, "has no method '_secret'"),
    (Invocation(address_of(UserApi), "get_user", (1, 2)), Status.BAD_REQUEST, "too many positional"),
    (Invocation(address_of(UserApi), "get_user", (1,), {"x": 1}), Status.BAD_REQUEST, "unexpected keyword"),
    (Invocation(address_of(UserApi), "get_user", (), {}), Status.BAD_REQUEST, "missing a required"),
])
def test_requests_the_interface_does_not_allow_are_refused(
    server: BackgroundServer[Server], serializer_cls: Any, invocation: Invocation, status: Status,
    message: str,
) -> None:
    ser = serializer_cls()
    frame = raw_call(server.address, Frame(FrameType.REQUEST, 1, ser.encode_invocation(invocation),
                                           codec=ser.serializer_id))
    with pytest.raises(RemoteError) as info:
        Client.read_outcome(frame, ser)
    assert info.value.status == status and message in info.value.message


class Gadget:
    def __reduce__(self) -> Any:
        return os.system, (f"touch {os.environ.get('RPC_PWNED', '/tmp/rpc-pwned')}",)


def test_a_hostile_pickle_is_refused_and_the_server_serves_on(
    server: BackgroundServer[Server], client: Client, tmp_path: Any, monkeypatch: Any,
) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("RPC_PWNED", str(marker))
    body = pickle.dumps((address_of(UserApi), "get_user", (Gadget(),), {}))
    frame = raw_call(server.address, Frame(FrameType.REQUEST, 1, body, codec=2))
    assert frame.status == Status.BAD_REQUEST and frame.codec == 0
    assert "global 'posix.system' is forbidden" in frame.body.decode()
    assert not marker.exists()
    assert client.proxy(UserApi).get_user(2).id == 2


@pytest.mark.parametrize("codec, body, message", [
    (1, b"\xff\xff\xff", "protobuf cannot parse the Request"),
    (2, b"not a pickle", "pickle: opcode unknown (0x6e) is not allowed"),
    (2, pickle.dumps(("a", "m"))[:-3], "pickle: truncated"),
    (9, b"", "serializer id 9 is not enabled"),
    (0, b"userService:getUser?id=1", "serializer id 0 is not enabled"),
])
def test_undecodable_bodies_get_bad_request(server: BackgroundServer[Server], codec: int,
                                            body: bytes, message: str) -> None:
    frame = raw_call(server.address, Frame(FrameType.REQUEST, 3, body, codec=codec))
    assert frame.status == Status.BAD_REQUEST and message in frame.body.decode()


def test_the_server_decides_which_serializers_it_accepts() -> None:
    with BackgroundServer(lambda: make_server(ServerConfig(serializers=("protobuf",)))) as bg:
        with Client(*bg.address) as client:
            assert client.proxy(UserApi, serializer="protobuf").get_user(1).id == 1
            with pytest.raises(RemoteError, match="serializer pickle \\(id 2\\) is not enabled") as info:
                client.proxy(UserApi, serializer="pickle").get_user(1)
            assert info.value.status == Status.BAD_REQUEST


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="unknown serializer 'json'"):
        ServerConfig(serializers=("json",))
    with pytest.raises(ConfigError):
        ServerConfig(serializers=())
    with pytest.raises(ConfigError, match="unknown serializer"):
        ClientConfig(serializer="marshal")


def test_blocking_proxy_refuses_to_run_on_its_own_loop(client: Client) -> None:
    user_api = client.proxy(UserApi)
    user_api.get_user(1)  # starts the client's loop thread
    loop_thread = client._loop()

    async def inner() -> None:
        user_api.get_user(1)

    with pytest.raises(RuntimeError, match="own event loop"):
        loop_thread.run(inner())


def test_a_closed_client_stays_closed(server: BackgroundServer[Server]) -> None:
    client = Client(*server.address)
    users = client.proxy(UserApi)
    assert users.get_user(1).id == 1
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        users.get_user(1)
    with pytest.raises(ConfigError, match="unknown serializer 'json'"):
        client.proxy(UserApi, serializer="json")
