"""Who may call (v3.3): a provider's token, read from the registry, and TLS, mutual or not.

Every test runs real providers on loopback: a client that did not go through the registry is
refused before its request is decoded, and a client without a certificate never gets past the
TLS handshake of a provider that asks for one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import run

from stages.harness.certs import Certificates, make_certificates
from stages.harness.threads import BackgroundServer
from stages.v1_0.errors import Status
from stages.v1_0.protocol import Frame, FrameType
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.user_stub import User, UserApi
from stages.v2_1 import Client as DirectClient
from stages.v2_1 import ClientConfig as DirectConfig
from stages.v2_1.client import Endpoint
from stages.v3_x import (
    Client,
    ClientConfig,
    ConnectionClosedError,
    RemoteError,
    RpcError,
    Server,
    ServerConfig,
    StaticRegistry,
    TransportError,
    ZooKeeperRegistry,
)
from stages.v3_x.config import ConfigError
from stages.v3_x.security import TlsConfig, hello, new_token, token_matches


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@contextmanager
def provider(config: ServerConfig, registry: object = None) -> Iterator[BackgroundServer[Server]]:
    def build() -> Server:
        server = Server(config, registry=registry or StaticRegistry([]))  # type: ignore[arg-type]
        server.bind(UserApi, UserApiImpl(), inline=True)
        return server
    with BackgroundServer(build) as bg:
        yield bg


def consumer_of(bg: BackgroundServer[Server], config: ClientConfig | None = None) -> Client:
    """A consumer that finds ``bg`` through a registry holding its entry, token included."""
    info = bg.call(lambda: bg.server.provider_info(UserApi.__rpc_api__.address))  # type: ignore[attr-defined]
    return Client(StaticRegistry([info]), config or ClientConfig())


# -- the token ---------------------------------------------------------------------------------


def test_tokens_are_fresh_and_compared_whole() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) == 32
    assert token_matches(first, hello(first))
    assert not token_matches(first, hello(second))
    assert not token_matches(first, Frame(8, 0, first.encode()[:-1]))
    with pytest.raises(ConfigError):
        ServerConfig(token="not a token!")


def test_a_consumer_of_the_registry_calls_and_a_direct_client_is_refused_undecoded() -> None:
    async def scenario() -> None:
        with provider(ServerConfig(token="auto")) as bg:
            token = bg.call(lambda: bg.server.token)
            assert token and token == bg.call(
                lambda: bg.server.provider_info(UserApi.__rpc_api__.address).token)  # type: ignore[attr-defined]
            client = consumer_of(bg)
            assert isinstance(await client.async_proxy(UserApi).get_user(7), User)
            await client.aclose()
            # Straight to the provider, without the token: refused, the call not run.
            direct = DirectClient(*bg.address)
            with pytest.raises(RemoteError) as refused:
                await direct.async_proxy(UserApi).get_user(7)
            assert refused.value.status == Status.UNAUTHENTICATED
            assert "token" in str(refused.value) and "not run" in str(refused.value)
            # A body that could not be decoded at all gets the same refusal: nothing was read.
            endpoint = Endpoint(bg.address, DirectConfig())
            answer = await endpoint.exchange(Frame(FrameType.REQUEST, 99, b"\x80\x05garbage",
                                                   codec=2), 5)
            assert (answer.request_id, answer.status) == (99, Status.UNAUTHENTICATED)
            # A wrong token: refused the same way, and counted.
            endpoint = Endpoint(bg.address, DirectConfig(), hello=hello(new_token()))
            answer = await endpoint.exchange(Frame(FrameType.REQUEST, 5, b"", codec=2), 5)
            assert answer.status == Status.UNAUTHENTICATED
            assert bg.call(lambda: bg.server.unauthenticated) == 1
            await direct.aclose()

    run(scenario)


def test_the_token_travels_through_zookeeper(zk_chroot: str) -> None:
    async def scenario() -> None:
        with provider(ServerConfig(token="auto"), ZooKeeperRegistry(zk_chroot)) as bg:
            client = Client(ZooKeeperRegistry(zk_chroot), ClientConfig())
            users = client.async_proxy(UserApi)
            assert [(await users.get_user(i)).id for i in (1, 2, 3)] == [1, 2, 3]
            await client.aclose()
            direct = DirectClient(*bg.address)
            with pytest.raises(RemoteError, match="token"):
                await direct.async_proxy(UserApi).get_user(1)
            await direct.aclose()

    run(scenario, 60)


# -- TLS -----------------------------------------------------------------------------------------


def tls_provider(certs: Certificates, *, mutual: bool) -> ServerConfig:
    return ServerConfig(tls=TlsConfig(cert=certs.server_cert, key=certs.server_key, ca=certs.ca,
                                      mutual=mutual))


def test_over_tls_the_consumer_checks_the_provider_against_its_ca(certs: Certificates) -> None:
    async def scenario() -> None:
        with provider(tls_provider(certs, mutual=False)) as bg:
            client = consumer_of(bg, ClientConfig(tls=TlsConfig(ca=certs.ca)))
            assert (await client.async_proxy(UserApi).get_user(3)).id == 3
            conn = client.endpoints[f"{bg.address[0]}:{bg.address[1]}"].connection
            assert conn is not None and conn.transport is not None
            assert conn.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            await client.aclose()
            # A consumer that trusts only the system's CAs refuses this provider.
            stranger = consumer_of(bg, ClientConfig(tls=TlsConfig(), timeout=3))
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.async_proxy(UserApi).get_user(3)
            await stranger.aclose()
            # A plain-TCP consumer gets no answer it can read: its connection fails.
            plain = consumer_of(bg, ClientConfig(timeout=2))
            with pytest.raises(RpcError):
                await plain.async_proxy(UserApi).get_user(3)
            await plain.aclose()

    run(scenario)


def test_mutual_tls_refuses_a_client_without_a_certificate(certs: Certificates) -> None:
    async def scenario() -> None:
        with provider(tls_provider(certs, mutual=True)) as bg:
            with_cert = consumer_of(bg, ClientConfig(tls=TlsConfig(
                ca=certs.ca, cert=certs.client_cert, key=certs.client_key)))
            assert (await with_cert.async_proxy(UserApi).get_user(4)).id == 4
            await with_cert.aclose()
            without = consumer_of(bg, ClientConfig(tls=TlsConfig(ca=certs.ca), timeout=3))
            with pytest.raises((ConnectionClosedError, TransportError)):
                await without.async_proxy(UserApi).get_user(4)
            await without.aclose()
            assert bg.call(lambda: len(bg.server.connections)) == 0

    run(scenario)


def test_bad_tls_settings_are_refused_with_the_reason(certs: Certificates, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no file"):
        TlsConfig(cert=str(tmp_path / "missing.pem"), key=certs.server_key)
    with pytest.raises(ConfigError, match="together"):
        TlsConfig(cert=certs.server_cert)
    with pytest.raises(ConfigError, match="mutual"):
        TlsConfig(cert=certs.server_cert, key=certs.server_key, mutual=True)
    with pytest.raises(ConfigError, match="needs its certificate"):
        TlsConfig(ca=certs.ca).server_context()
    with pytest.raises(ssl.SSLError):  # a key that does not belong to the certificate
        TlsConfig(cert=certs.server_cert, key=certs.client_key).server_context()
