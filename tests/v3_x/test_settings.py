"""The config center (v3.3): settings parsed and checked whole, then applied live by consumers
watching ZooKeeper, with the last good settings kept when a bad document is written."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from support import run, run_stage, until
from zk_support import Load, key, provider, zk_client

from stages.harness.zookeeper import expire_session
from stages.v2_0.user_stub import User, UserApi
from stages.v3_x import CallPolicy, Client, ClientConfig, ZooKeeperRegistry
from stages.v3_x.errors import ConfigError
from stages.v3_x.metrics import ClientMetrics
from stages.v3_x.registry import consumers_path, providers_path
from stages.v3_x.settings import ApiSettings, CallSettings, config_path

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]

# -- parsing, pure -----------------------------------------------------------------------------


def test_a_full_document_is_parsed_and_methods_take_the_api_settings_they_leave_unset() -> None:
    settings = ApiSettings.parse(json.dumps({
        "api": {"timeout": 2, "mode": "failover", "idempotent": True, "retries": 3},
        "methods": {"get_user": {"timeout": 0.5}, "find_users": {"mode": "failfast"}},
        "balancer": "round_robin",
        "providers": {"127.0.0.1:1": {"weight": 5}, "127.0.0.1:2": {"enabled": False}},
    }).encode(), version=4)
    assert settings.version == 4 and settings.balancer == "round_robin"
    assert settings.for_method("get_user") == CallSettings(0.5, "failover", True, 3, None)
    assert settings.for_method("find_users").mode == "failfast"
    assert settings.for_method("other") == settings.api
    assert settings.providers["127.0.0.1:1"].weight == 5
    assert settings.providers["127.0.0.1:2"].enabled is False
    assert ApiSettings.parse(b"") == ApiSettings() and ApiSettings.parse(b"{}").api == CallSettings()


@pytest.mark.parametrize("document, message", [
    (b"{not json", "not JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"api": {"timeout": -1}}', "timeout must be a number of seconds"),
    (b'{"api": {"timeout": "1"}}', "timeout must be a number of seconds"),
    (b'{"api": {"timeout": 1e999}}', "timeout must be a number of seconds"),
    (b'{"api": {"timeout": NaN}}', "timeout must be a number of seconds"),
    (b'{"api": {"mode": "retry-forever"}}', "mode must be one of"),
    (b'{"api": {"mode": "failover"}}', 'needs "idempotent": true'),
    (b'{"api": {"mode": "failover", "idempotent": true},'
     b' "methods": {"m": {"idempotent": false}}}', "methods.m: failover"),
    (b'{"api": {"retries": 9}}', "retries must be an int from 0 to 4"),
    (b'{"api": {"retries": true}}', "retries must be an int from 0 to 4"),
    (b'{"balancer": "fastest"}', "unknown strategy"),
    (b'{"providers": {"h:1": {"weight": 20000}}}', "weight must be an int from 0 to 10000"),
    (b'{"providers": {"h:1": {"enabled": "no"}}}', "enabled must be true or false"),
    (b'{"apl": {}}', "unknown fields"),
    (b'{"api": {"timeuot": 1}}', "unknown fields"),
    (b'{"methods": []}', "must be a JSON object"),
    (b" " * 70_000, "at most 65536"),
    (b"[" * 100_000, "at most 65536"),
])
def test_a_bad_document_is_refused_whole_with_a_reason(document: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        ApiSettings.parse(document)
    assert len(str(refused.value)) < 400


def test_many_entries_are_refused_before_anything_is_built() -> None:
    document = json.dumps({"providers": {f"h:{i}": {} for i in range(1001)}}).encode()
    with pytest.raises(ConfigError, match="at most 1000 entries"):
        ApiSettings.parse(document)


# -- live, against ZooKeeper and real providers ------------------------------------------------


@pytest.fixture
def zk(zk_chroot: str) -> Iterator[KazooClient]:
    """A ZooKeeper client in the test's own subtree, to write settings and read reports."""
    with zk_client(zk_chroot) as client:
        yield client


def write(zk: KazooClient, document: object) -> int:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    zk.ensure_path(config_path(USERS))
    return zk.set(config_path(USERS), data).version


@asynccontextmanager
async def consumer(hosts: str, **settings: object) -> AsyncIterator[Client]:
    client = Client(ZooKeeperRegistry(hosts), ClientConfig(**settings))  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.aclose()


async def applied(client: Client, version: int) -> None:
    """Wait until ``client`` runs the settings of ``version``."""
    await until(lambda: USERS in client.settings and client.settings[USERS].version == version,
                5, f"settings version {version} applied")


def test_a_hot_update_under_load_shifts_traffic_within_a_second_and_fails_no_call(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot) as one, provider(zk_chroot):
            async with consumer(zk_chroot, balancer="round_robin") as client:
                load = Load(client)
                await until(lambda: load.ok > 200, 10, "calls under way")
                view = client.views[USERS]
                await until(lambda: len(view.candidates) == 2, 10, "both providers seen")
                # Take provider one out of rotation.
                version = write(zk, {"providers": {key(one): {"enabled": False}}})
                written = time.monotonic()
                await applied(client, version)
                applied_after = time.monotonic() - written
                assert applied_after < 1.0, applied_after
                sent = view.candidates[key(one)].calls + view.candidates[key(one)].active
                ok_before = load.ok
                await until(lambda: load.ok > ok_before + 300, 10, "calls after the update")
                assert view.candidates[key(one)].calls + view.candidates[key(one)].active \
                    <= sent + 8  # at most the calls already in flight to it
                # And back, with a weight: traffic returns to it.
                write(zk, {"providers": {key(one): {"weight": 300}}})
                await until(lambda: view.candidates[key(one)].weight == 300, 5, "weight applied")
                ok_before = load.ok
                before = view.candidates[key(one)].calls
                await until(lambda: load.ok > ok_before + 400, 10, "calls after the second")
                share = (view.candidates[key(one)].calls - before) / (load.ok - ok_before)
                assert share > 0.6, share  # 300 against 100
                await load.stop()
                assert not load.failed, load.failed

    run(scenario, 90)


def test_a_bad_document_is_refused_and_the_last_good_settings_stay(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot):
            async with consumer(zk_chroot) as client:
                users = client.async_proxy(UserApi)
                await users.get_user(1)
                good = write(zk, {"api": {"timeout": 0.7}})
                await applied(client, good)
                write(zk, b'{"api": {"timeout": -3}}')
                await until(lambda: client.settings_refused == 1, 5, "bad refused")
                assert client.settings[USERS].version == good
                assert client.settings[USERS].api.timeout == 0.7
                assert isinstance(await users.get_user(2), User)  # calls go on

    run(scenario, 60)


def test_forced_degradation_and_the_timeout_come_from_the_config_center(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot) as one:
            async with consumer(zk_chroot) as client:
                client.set_policy(UserApi, CallPolicy(
                    fallback=lambda user_id: User(user_id, "(degraded)", "")))
                users = client.async_proxy(UserApi)
                assert (await users.get_user(5)).name != "(degraded)"
                version = write(zk, {"methods": {"get_user": {"force_fallback": True}}})
                await applied(client, version)
                sent = client.views[USERS].candidates[key(one)].calls
                assert (await users.get_user(5)).name == "(degraded)"
                assert client.views[USERS].candidates[key(one)].calls == sent  # no remote call
                # A timeout from the config center, below what a frozen provider needs.
                version = write(zk, {"api": {"timeout": 0.3}})
                await applied(client, version)
                one.pause()
                try:
                    start = time.monotonic()
                    # Timed out after the config center's 0.3 s (not the code's 5 s), and the
                    # fallback answered, as the policy says.
                    assert (await users.get_user(5)).name == "(degraded)"
                    assert 0.25 < time.monotonic() - start < 1.5
                finally:
                    one.resume()

    run(scenario, 60)


def test_force_fallback_without_a_fallback_in_code_is_refused(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot):
            async with consumer(zk_chroot) as client:
                await client.async_proxy(UserApi).get_user(1)
                write(zk, {"api": {"force_fallback": True}})
                await until(lambda: client.settings_refused == 1, 5, "refused")
                assert isinstance(await client.async_proxy(UserApi).get_user(1), User)

    run(scenario, 60)


def test_the_config_command_checks_writes_reads_and_watches(zk_chroot: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"api": {"timeout": 1.5}}')
    bad.write_text('{"api": {"timeout": "soon"}}')
    refused = run_stage("v3_x", "config", "set", str(bad), "--zk", zk_chroot, "--api", USERS)
    assert refused.returncode == 2 and "timeout must be a number" in refused.stderr
    done = run_stage("v3_x", "config", "set", str(good), "--zk", zk_chroot, "--api", USERS)
    assert done.returncode == 0 and "settings version" in done.stdout
    shown = run_stage("v3_x", "config", "get", "--zk", zk_chroot, "--api", USERS)
    assert json.loads(shown.stdout.splitlines()[1]) == {"api": {"timeout": 1.5}}
    watched = run_stage("v3_x", "config", "watch", "--zk", zk_chroot, "--api", USERS,
                        "--seconds", "1")
    assert '"timeout": 1.5' in watched.stdout


def test_every_consumer_and_provider_reports_the_settings_version_it_holds(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot), provider(zk_chroot):
            async with consumer(zk_chroot) as first, consumer(zk_chroot) as second:
                for client in (first, second):
                    await client.async_proxy(UserApi).get_user(1)
                version = write(zk, {"api": {"retries": 1}})
                consumers = consumers_path(USERS)

                def reported() -> list[object]:
                    return [json.loads(zk.get(f"{consumers}/{name}")[0]).get("settings_version")
                            for name in zk.get_children(consumers)]

                await until(lambda: reported() == [version, version], 5, "both report it")
                # The providers report it too, in their own entries.
                providers = providers_path(USERS)

                def held() -> list[object]:
                    return [json.loads(zk.get(f"{providers}/{name}")[0])["settings_version"]
                            for name in zk.get_children(providers)]

                await until(lambda: held() == [version, version], 5, "both providers hold it")

    run(scenario, 60)


def test_settings_and_metrics_survive_an_expired_session(zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot):
            async with consumer(zk_chroot) as client:
                metrics = ClientMetrics()
                metrics.attach(client)
                users = client.async_proxy(UserApi)
                for i in range(20):
                    await users.get_user(1 + i)
                before = write(zk, {"api": {"timeout": 1.5}})
                await applied(client, before)
                registry = client.registry
                assert isinstance(registry, ZooKeeperRegistry)
                await asyncio.to_thread(expire_session, registry.client, zk_chroot)
                # A new session: the settings in force stay, the watch is set again (a write
                # after the expiry is applied), and the counters go on from where they were.
                assert client.settings[USERS].version == before
                after = write(zk, {"api": {"timeout": 2.5}})
                await applied(client, after)
                assert client.settings[USERS].api.timeout == 2.5
                for i in range(20):
                    await users.get_user(1 + i)
                calls = metrics.snapshot()["rpc_client_calls_total"]
                assert calls[(USERS, "get_user", "ok")] == 40
                lost = metrics.snapshot()["rpc_client_registry_state_changes_total"]
                assert lost[("lost",)] >= 1

    run(scenario, 60)


def test_a_consumer_that_starts_after_the_settings_reports_their_version(
        zk_chroot: str, zk: KazooClient) -> None:
    async def scenario() -> None:
        with provider(zk_chroot):
            version = write(zk, {"api": {"retries": 1}})
            async with consumer(zk_chroot) as client:
                await client.async_proxy(UserApi).get_user(1)
                await applied(client, version)
                consumers = consumers_path(USERS)

                def reported() -> list[object]:
                    return [json.loads(zk.get(f"{consumers}/{name}")[0]).get("settings_version")
                            for name in zk.get_children(consumers)]

                await until(lambda: reported() == [version], 5, "its entry reports it")

    run(scenario, 60)
