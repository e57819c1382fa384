"""Registration and discovery on a real ZooKeeper, with real provider processes.

Each test works in a chroot of its own (the ``zk_chroot`` fixture) of the session's ZooKeeper,
except those that stop ZooKeeper, which start their own. Providers run as child processes
(``python -m stages.v3_x server --zk ...``) so that they can be killed for real; the consumer
runs in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import KazooState
from support import run, until
from zk_support import USERS, Load, consumer, key, provider, provider_started

from stages.harness.ports import free_port
from stages.harness.zookeeper import LocalZooKeeper, expire_session
from stages.v2_0.user_stub import UserApi
from stages.v3_x import (
    Client,
    ProviderInfo,
    RegistryUnavailable,
    ZooKeeperRegistry,
)
from stages.v3_x.registry import STATES_KEPT, providers_path

# -- what a registry entry may hold --------------------------------------------------------------


def test_a_provider_entry_round_trips_and_hostile_ones_are_refused() -> None:
    info = ProviderInfo(host="127.0.0.1", port=9000, weight=5, methods=("get_user",),
                        version="1.2", started_at=1.5)
    assert ProviderInfo.from_json(info.to_json(), key="127.0.0.1:9000") == info
    bad = {
        b"\xff\xfe": "not JSON",
        b"[1, 2]": "not a JSON object",
        b'{"host": "127.0.0.1", "port": 70000}': "bad port",
        b'{"host": "127.0.0.1", "port": "9000"}': "bad port",
        b'{"host": "a b", "port": 9000}': "bad host",
        b'{"host": "127.0.0.1", "port": 9000, "weight": -1}': "bad weight",
        b'{"host": "127.0.0.1", "port": 9000, "weight": true}': "bad weight",
        b'{"host": "127.0.0.1", "port": 9000, "started_at": NaN}': "bad started_at",
        b'{"host": "127.0.0.1", "port": 9000, "methods": [1]}': "bad methods",
        b"[" * 100_000: "entry of 100000 bytes",
        b'{"host": "127.0.0.1", "port": 9001}': "holds the entry of 127.0.0.1:9001",
    }
    for data, message in bad.items():
        with pytest.raises(ValueError, match=message):
            ProviderInfo.from_json(data, key="127.0.0.1:9000")
    # A newer provider may say more: unknown fields are ignored.
    assert ProviderInfo.from_json(b'{"host": "h", "port": 1, "zone": "eu"}').key == "h:1"


# -- discovery -----------------------------------------------------------------------------------


def test_consumers_see_providers_come_and_skip_a_hostile_entry(zk_chroot: str) -> None:
    async def scenario() -> None:
        with provider(zk_chroot) as first:
            async with consumer(zk_chroot) as client:
                view = await client.view(USERS)
                assert set(view.candidates) == {key(first)}
                # Someone writes garbage next to the real entry: it is skipped, not trusted.
                zk = KazooClient(hosts=zk_chroot)
                zk.start(10)
                zk.create(f"{providers_path(USERS)}/10.9.9.9:1", b'{"host": "evil"}')
                with provider(zk_chroot) as second:
                    await until(lambda: set(view.candidates) == {key(first), key(second)}, 10,
                                "the second provider in the view")
                    users = client.async_proxy(UserApi)
                    got = await asyncio.gather(*(users.get_user(i) for i in range(1, 41)))
                    assert [u.id for u in got] == list(range(1, 41))
                    assert {c.key for c in view.candidates.values() if c.calls} == \
                        {key(first), key(second)}
                zk.stop()
                zk.close()

    run(scenario, 60)


def test_a_killed_provider_costs_only_its_calls_in_flight_and_leaves_the_view(
        zk_chroot: str) -> None:
    async def scenario() -> None:
        with provider(zk_chroot) as survivor, provider(zk_chroot) as victim:
            async with consumer(zk_chroot) as client:
                view = await client.view(USERS)
                await until(lambda: len(view.candidates) == 2, 10, "both providers")
                load = Load(client)
                await until(lambda: load.ok > 200, 10, "calls under way")
                victim.kill()
                killed_at = time.monotonic()
                await until(lambda: key(victim) not in view.candidates, 15,
                            "the dead provider's entry to expire")
                expired_after = time.monotonic() - killed_at
                ok_at_expiry = load.ok
                await until(lambda: load.ok > ok_at_expiry + 200, 10, "calls after the expiry")
                await load.stop()
                # Only calls in flight on the victim when it died may fail, and only as
                # "connection closed": every later call went to the survivor.
                assert set(load.failed) <= {"ConnectionClosedError"}, load.failed
                assert sum(load.failed.values()) <= 8, load.failed
                assert view.candidates[key(survivor)].calls > 400
                assert 0.5 < expired_after < 10, expired_after

    run(scenario, 60)


def test_a_graceful_stop_under_load_fails_no_call(zk_chroot: str) -> None:
    async def scenario() -> None:
        with provider(zk_chroot) as staying, provider(zk_chroot) as leaving:
            async with consumer(zk_chroot) as client:
                view = await client.view(USERS)
                await until(lambda: len(view.candidates) == 2, 10, "both providers")
                load = Load(client, workers=16)
                await until(lambda: view.candidates[key(leaving)].calls > 100, 10,
                            "calls to the provider that will leave")
                # SIGTERM: withdraw, wait, drain. Off the loop, so that the calls go on.
                await asyncio.to_thread(leaving.stop)
                ok_at_stop = load.ok
                await until(lambda: load.ok > ok_at_stop + 200, 10, "calls after the stop")
                await load.stop()
                assert not load.failed, load.failed
                assert key(leaving) not in view.candidates and key(staying) in view.candidates

    run(scenario, 60)


# -- ZooKeeper's faults --------------------------------------------------------------------------


def test_an_expired_session_re_registers_even_over_the_old_sessions_node(zk_chroot: str) -> None:
    info = ProviderInfo(host="127.0.0.1", port=4242)
    path = f"{providers_path(USERS)}/{info.key}"

    async def scenario() -> None:
        registry = ZooKeeperRegistry(zk_chroot, session_timeout=2.0)
        await registry.start()
        zk = KazooClient(hosts=zk_chroot)
        zk.start(10)
        try:
            # The node is still there from an older session (deleted late): ours replaces it.
            zk.create(path, b"{}", ephemeral=True, makepath=True)
            await registry.register(USERS, info)
            data, stat = zk.get(path)
            assert stat.ephemeralOwner == registry.client.client_id[0]
            assert ProviderInfo.from_json(data) == info
            # The session expires: the entry comes back under the new session.
            old_session = registry.client.client_id[0]
            await asyncio.to_thread(expire_session, registry.client, zk_chroot)

            def owned_by_new_session() -> bool:
                stat = zk.exists(path)
                return stat is not None and stat.ephemeralOwner not in (0, old_session)

            await until(owned_by_new_session, 15, "the entry re-created by the new session")
            # Deleted behind its back while it lives: it puts the entry back.
            zk.delete(path)
            await until(lambda: zk.exists(path) is not None, 10, "the entry put back")
        finally:
            await registry.aclose()
            assert zk.exists(path) is None  # closing withdrew it
            zk.stop()
            zk.close()

    run(scenario, 60)


def test_an_entry_deleted_as_soon_as_a_new_session_has_made_it_is_put_back(
        zk_chroot: str) -> None:
    # After an expiry the provider makes its entries again under the new session. Deleted at
    # once, an entry can vanish before the provider has watched it again: a watch that reports
    # only changes of version then sees "no node" twice and says nothing. Each entry is watched
    # as it is made, and checked at once if it is already gone.
    infos = [ProviderInfo(host="127.0.0.1", port=4243 + i) for i in range(3)]
    paths = [f"{providers_path(USERS)}/{info.key}" for info in infos]

    async def scenario() -> None:
        registry = ZooKeeperRegistry(zk_chroot, session_timeout=1.0)
        await registry.start()
        zk = KazooClient(hosts=zk_chroot)
        zk.start(10)
        try:
            for info in infos:
                await registry.register(USERS, info)
            for round_ in range(8):  # the window is narrow: several rounds to find it
                old_session = registry.client.client_id[0]
                await asyncio.to_thread(expire_session, registry.client, zk_chroot)

                def remade(old: int = old_session) -> bool:
                    stat = zk.exists(paths[0])
                    return stat is not None and stat.ephemeralOwner not in (0, old)

                await until(remade, 15, f"the entry made by the new session (round {round_})")
                with contextlib.suppress(NoNodeError):
                    zk.delete(paths[0])
                await until(lambda: zk.exists(paths[0]) is not None, 10,
                            f"the entry put back (round {round_})")
        finally:
            await registry.aclose()
            zk.stop()
            zk.close()

    run(scenario, 120)


def test_zookeeper_unreachable_at_start_is_a_clear_error_not_a_hang() -> None:
    async def scenario() -> None:
        client = Client(ZooKeeperRegistry(f"127.0.0.1:{free_port()}", connect_timeout=1.0))
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="did not answer within 1 s"):
            await client.async_proxy(UserApi).get_user(1)
        assert time.monotonic() - started < 5
        await client.aclose()

    run(scenario, 30)


def test_calls_go_on_while_zookeeper_is_down_and_everything_recovers_after() -> None:
    with LocalZooKeeper() as zk:
        async def scenario() -> None:
            # Sessions as long as this ZooKeeper allows (20 ticks: 4 s), so that they outlive
            # the outage: a disconnection, not an expiry (the expiry has its own test).
            with provider(zk.hosts, "--session-timeout", "4") as first:
                async with consumer(zk.hosts) as client:
                    view = await client.view(USERS)
                    await until(lambda: len(view.candidates) == 1, 10, "the provider")
                    load = Load(client, workers=4)
                    await asyncio.to_thread(zk.stop, keep_data=True)
                    ok_at_stop = load.ok
                    # Suspended, not lost: the last known list serves the calls.
                    await until(lambda: load.ok > ok_at_stop + 200, 10, "calls while ZK is down")
                    assert set(view.candidates) == {key(first)}
                    await asyncio.to_thread(zk.start)
                    async with provider_started(zk.hosts) as second:
                        await until(lambda: set(view.candidates) == {key(first), key(second)},
                                    30, "both providers once ZooKeeper is back")
                    await load.stop()
                    assert not load.failed, load.failed

        run(scenario, 90)


# -- the command line ----------------------------------------------------------------------------


def stage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages.v3_x", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_registry_and_client_commands(zk_chroot: str) -> None:
    with provider(zk_chroot) as one, provider(zk_chroot, "--weight", "300") as three:
        tree = stage("registry", "--zk", zk_chroot)
        assert tree.returncode == 0, tree.stderr
        for expected in ("rpc", "walkthrough", "stages.v2_0.user_stub.api.UserApi", "providers",
                         f"{key(one)}  (ephemeral)", '"weight":300'):
            assert expected in tree.stdout, tree.stdout
        done = stage("client", "--zk", zk_chroot, "--lb", "weighted", "--calls", "400", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["calls"] == 400 and result["errors"] == 0
        share = result["per_provider"][key(three)] / 400
        assert 0.65 < share < 0.85, result  # weights 300 and 100: three quarters



def test_a_registry_remembers_its_last_state_changes_and_counts_them_all() -> None:
    # A connection that flaps for months must not fill the memory; the metrics still count all.
    registry = ZooKeeperRegistry(f"127.0.0.1:{free_port()}")
    for i in range(STATES_KEPT + 500):
        registry._on_state(KazooState.SUSPENDED if i % 2 else KazooState.CONNECTED)
    assert len(registry.states) == STATES_KEPT
    assert registry.states[-1][1] == "SUSPENDED"
    assert registry.state_counts == {"CONNECTED": (STATES_KEPT + 500) // 2,
                                     "SUSPENDED": (STATES_KEPT + 500) // 2}
