"""Protected interfaces: ZooKeeper digest ACLs on the registry's nodes, on a real ZooKeeper.

A provider with credentials makes its interface's ``providers`` node writable by its identity
only, readable by anyone; providers without them (or with other ones) are refused at once, while
consumers, who only read, need none. Registries run in the test (no provider processes): what is
checked is what lands in ZooKeeper, read back with a plain kazoo client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kazoo.security import ACL, OPEN_ACL_UNSAFE, Permissions
from support import run, run_stage, until
from zk_support import USERS, zk_client

from stages.harness.process import ServerProcess
from stages.harness.zookeeper import expire_session
from stages.v2_0.user_stub import UserApi
from stages.v3_x import ProviderInfo, RegistryError, RegistryUnavailable, ZooKeeperRegistry
from stages.v3_x.errors import ConfigError
from stages.v3_x.registry import (
    ROOT,
    RegistryNotAllowed,
    consumers_path,
    providers_path,
)
from stages.v3_x.settings import config_path

PASSWORD = "s3cret-Pa55"
CREDENTIALS = f"provider:{PASSWORD}"
PROVIDERS = providers_path(USERS)
PROVIDER = ProviderInfo(host="127.0.0.1", port=9000)
INTRUDER = ProviderInfo(host="10.6.6.6", port=6666)


def entry(info: ProviderInfo) -> str:
    return f"{PROVIDERS}/{info.key}"


@asynccontextmanager
async def registry(hosts: str, credentials: str | None = None,
                   session_timeout: float = 10.0) -> AsyncIterator[ZooKeeperRegistry]:
    started = ZooKeeperRegistry(hosts, credentials=credentials, session_timeout=session_timeout,
                                operation_timeout=5.0)
    await started.start()
    try:
        yield started
    finally:
        await started.aclose()


def assert_protected(acl: list[ACL], user: str = "provider") -> None:
    """Digest ``user`` may do everything, anyone may read, nobody else anything. (ZooKeeper
    shows a reader without rights the digest's hash as ``x``: only the user is compared.)"""
    assert len(acl) == 2, acl
    by_scheme = {entry.id.scheme: entry for entry in acl}
    assert by_scheme["digest"].id.id.split(":")[0] == user
    assert by_scheme["digest"].perms == Permissions.ALL
    assert by_scheme["world"].id.id == "anyone"
    assert by_scheme["world"].perms == Permissions.READ


class Views:
    """A watch listener that keeps what it was told."""

    def __init__(self) -> None:
        self.latest: set[str] | None = None

    def __call__(self, providers: Mapping[str, ProviderInfo]) -> None:
        self.latest = set(providers)


# -- a protected interface -----------------------------------------------------------------------


def test_a_provider_with_credentials_protects_its_providers_node_and_entry(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as provider:
            await provider.register(USERS, PROVIDER)
            with zk_client(zk_chroot) as zk:
                assert_protected(zk.get_acls(PROVIDERS)[0])
                assert_protected(zk.get_acls(entry(PROVIDER))[0])
                # The parents stay open: consumers add their entries, operators the settings.
                namespace = USERS.split("/")[0]
                for parent in (ROOT, f"{ROOT}/{namespace}", f"{ROOT}/{USERS}"):
                    assert zk.get_acls(parent)[0] == OPEN_ACL_UNSAFE, parent
            assert provider.describe() == f"zookeeper {zk_chroot} as provider"

    run(scenario, 30)


def test_without_the_credentials_a_provider_is_refused_at_once_and_the_rest_works(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        second = ProviderInfo(host="127.0.0.1", port=9001)
        async with registry(zk_chroot, CREDENTIALS) as provider:
            await provider.register(USERS, PROVIDER)
            for credentials, refusal in [
                    (None, "this registry has no credentials"),
                    ("provider:wrong-password", "other credentials than this registry's "
                                                "(user 'provider', or the password differs)"),
                    (f"intruder:{PASSWORD}", "(user 'intruder'")]:
                async with registry(zk_chroot, credentials) as other:
                    views = Views()
                    await other.watch(USERS, views)
                    assert views.latest == {PROVIDER.key}
                    started = time.monotonic()
                    with pytest.raises(RegistryNotAllowed) as refused:
                        await other.register(USERS, INTRUDER)
                    assert time.monotonic() - started < 2  # refused, not retried
                    message = str(refused.value)
                    assert f"not allowed to register under {PROVIDERS}" in message
                    assert refusal in message and "--zk-auth user:password" in message
                    assert not isinstance(refused.value, RegistryUnavailable)
                    with zk_client(zk_chroot) as zk:
                        assert zk.get_children(PROVIDERS) == [PROVIDER.key]
                    # The registry still works: its watch follows the interface, and it may
                    # announce itself as a consumer.
                    await provider.register(USERS, second)
                    await until(lambda v=views: v.latest == {PROVIDER.key, second.key}, 5,
                                "the refused registry's view to see the second provider")
                    await provider.unregister(USERS, second)
                    await until(lambda v=views: v.latest == {PROVIDER.key}, 5,
                                "the second provider gone from the view")
                    await other.register_consumer(USERS)

    run(scenario, 30)


def test_a_refused_registration_is_not_tried_again_after_a_new_session(
        zk_chroot: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as provider, \
                registry(zk_chroot, session_timeout=2.0) as other:
            await provider.register(USERS, PROVIDER)
            with pytest.raises(RegistryNotAllowed):
                await other.register(USERS, INTRUDER)
            await other.register_consumer(USERS)
            old_session = other.client.client_id[0]
            await asyncio.to_thread(expire_session, other.client, zk_chroot)
            with zk_client(zk_chroot) as zk:
                def consumer_entry_remade() -> bool:
                    children = zk.get_children(consumers_path(USERS))
                    stat = zk.exists(f"{consumers_path(USERS)}/{children[0]}") if children else None
                    return stat is not None and stat.ephemeralOwner not in (0, old_session)

                # Entries are made again in the order they were first made: once the consumer's
                # is back, a retried registration would have been refused (and logged) already.
                await until(consumer_entry_remade, 15, "the consumer entry made again")
            assert "not allowed" not in caplog.text

    caplog.set_level(logging.WARNING, logger="stages.v3_x.registry")
    run(scenario, 30)


def test_a_consumer_without_credentials_reads_the_providers_and_adds_its_entry(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as provider, \
                registry(zk_chroot) as consumer:
            await provider.register(USERS, PROVIDER)
            views = Views()
            await consumer.watch(USERS, views)
            assert views.latest == {PROVIDER.key}
            await consumer.register_consumer(USERS)
            await consumer.report_settings(USERS, 3)
            with zk_client(zk_chroot) as zk:
                (name,) = zk.get_children(consumers_path(USERS))
                data, _ = zk.get(f"{consumers_path(USERS)}/{name}")
                assert b'"settings_version": 3' in data

    run(scenario, 30)


def test_an_open_providers_node_is_protected_by_the_first_provider_with_credentials(
        zk_chroot: str, caplog: pytest.LogCaptureFixture) -> None:
    early = ProviderInfo(host="127.0.0.1", port=9001)

    async def scenario() -> None:
        async with registry(zk_chroot) as unprotected:
            await unprotected.register(USERS, early)
            with zk_client(zk_chroot) as zk:
                assert zk.get_acls(PROVIDERS)[0] == OPEN_ACL_UNSAFE
                async with registry(zk_chroot, CREDENTIALS) as provider:
                    await provider.register(USERS, PROVIDER)
                    assert_protected(zk.get_acls(PROVIDERS)[0])
                    # The entry made before stays (until its session ends), and is named.
                    assert sorted(zk.get_children(PROVIDERS)) == sorted([early.key,
                                                                          PROVIDER.key])
                    assert f"protected {PROVIDERS}" in caplog.text
                    assert early.key in caplog.text
                    # From now on, a provider without credentials is refused.
                    with pytest.raises(RegistryNotAllowed):
                        await unprotected.register(USERS, INTRUDER)

    caplog.set_level(logging.WARNING, logger="stages.v3_x.registry")
    run(scenario, 30)


def test_the_settings_node_is_protected_when_written_with_credentials(zk_chroot: str) -> None:
    path = config_path(USERS)

    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as operator, \
                registry(zk_chroot) as anonymous:
            # Written first without credentials: open; then with them: protected.
            assert await anonymous.write_config(USERS, b'{"balancer": "p2c"}') == 0
            assert await operator.write_config(USERS, b'{"balancer": "random"}') == 1
            with zk_client(zk_chroot) as zk:
                assert_protected(zk.get_acls(path)[0])
            with pytest.raises(RegistryNotAllowed, match="not allowed to write the settings"):
                await anonymous.write_config(USERS, b'{"balancer": "p2c"}')
            # Consumers, without credentials, still read it.
            seen: list[tuple[bytes, int]] = []
            await anonymous.watch_config(USERS, lambda data, version: seen.append((data, version)))
            await until(lambda: seen[-1:] == [(b'{"balancer": "random"}', 1)], 5,
                        "the consumer to read the settings")

    run(scenario, 30)


def test_protect_locks_an_interface_down_before_its_providers_start(zk_chroot: str) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as operator, \
                registry(zk_chroot) as anonymous:
            assert await operator.protect(USERS) == [PROVIDERS, config_path(USERS)]
            assert await operator.protect(USERS) == []  # nothing left to do
            with zk_client(zk_chroot) as zk:
                assert_protected(zk.get_acls(PROVIDERS)[0])
                # The settings node is made too, protected, holding settings that set nothing.
                assert_protected(zk.get_acls(config_path(USERS))[0])
                assert zk.get(config_path(USERS))[0] == b"{}"
            with pytest.raises(RegistryNotAllowed):
                await anonymous.register(USERS, INTRUDER)
            with pytest.raises(RegistryNotAllowed):
                await anonymous.write_config(USERS, b'{"api": {"timeout": 1}}')
            with pytest.raises(ConfigError, match="protecting needs credentials"):
                await anonymous.protect(USERS)

    run(scenario, 30)


# -- sessions and credentials --------------------------------------------------------------------


def test_after_an_expired_session_the_provider_registers_again_with_its_rights(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS, session_timeout=2.0) as provider:
            await provider.register(USERS, PROVIDER)
            old_session = provider.client.client_id[0]
            await asyncio.to_thread(expire_session, provider.client, zk_chroot)
            with zk_client(zk_chroot) as zk:
                def owned_by_new_session() -> bool:
                    stat = zk.exists(entry(PROVIDER))
                    return stat is not None and stat.ephemeralOwner not in (0, old_session)

                # Re-creating it under the protected node needs the credentials: kazoo sent
                # them again on the new session.
                await until(owned_by_new_session, 15, "the entry made by the new session")
                assert_protected(zk.get_acls(entry(PROVIDER))[0])
                assert_protected(zk.get_acls(PROVIDERS)[0])

    run(scenario, 30)


@pytest.mark.parametrize("credentials", [
    f"provider{PASSWORD}", f":{PASSWORD}", "provider:", f"pro vider:{PASSWORD}",
    f"provider:{PASSWORD}\n", f"provider:{PASSWORD * 50}",
])
def test_malformed_credentials_are_refused_without_showing_them(credentials: str) -> None:
    with pytest.raises(ConfigError, match="credentials must be 'user:password'") as refused:
        ZooKeeperRegistry("127.0.0.1:1", credentials=credentials)
    assert PASSWORD not in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_the_password_shows_in_no_description_and_no_log(
        zk_chroot: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with registry(zk_chroot, CREDENTIALS) as provider:
            await provider.register(USERS, PROVIDER)
            assert PASSWORD not in repr(provider) and PASSWORD not in provider.describe()
        async with registry(zk_chroot, "provider:wrong-password") as other:
            with pytest.raises(RegistryError) as refused:
                await other.register(USERS, INTRUDER)
            assert "wrong-password" not in str(refused.value)

    caplog.set_level(logging.DEBUG)  # kazoo logs every request it sends, credentials included
    run(scenario, 30)
    assert "Auth(" in caplog.text  # kazoo did log the request that carries them ...
    assert f"provider:{PASSWORD}" not in caplog.text  # ... without them
    assert PASSWORD not in caplog.text and "wrong-password" not in caplog.text


def test_the_commands_protect_an_api_and_refuse_writers_without_the_credentials(
        zk_chroot: str, tmp_path: Path) -> None:
    users = USERS
    assert users == UserApi.__rpc_api__.address  # type: ignore[attr-defined]
    done = run_stage("v3_x", "registry", "protect", "--zk", zk_chroot, "--api", users,
                     "--zk-auth", "ops:s3cret")
    assert done.returncode == 0 and f"protected /rpc/{users}/providers" in done.stdout
    settings = tmp_path / "settings.json"
    settings.write_text('{"api": {"timeout": 2.0}}')
    refused = run_stage("v3_x", "config", "set", str(settings), "--zk", zk_chroot, "--api", users)
    assert refused.returncode == 2 and "not allowed" in refused.stderr, refused.stderr
    written = run_stage("v3_x", "config", "set", str(settings), "--zk", zk_chroot, "--api", users,
                        "--zk-auth", "ops:s3cret")
    assert written.returncode == 0 and "settings version" in written.stdout, written.stderr
    assert "s3cret" not in written.stdout + written.stderr
    # A provider without the credentials does not start: it could not register.
    with pytest.raises(RuntimeError, match="not allowed"):
        ServerProcess("stages.v3_x", ["--zk", zk_chroot]).start()
    with ServerProcess("stages.v3_x", ["--zk", zk_chroot, "--zk-auth", "ops:s3cret"]) as ok:
        assert ok.port > 0
