"""Harder registry faults: an ensemble member lost under load, and random sequences of provider
arrivals, departures, crashes and session expiries checked against what ZooKeeper holds."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kazoo.client import KazooClient
from support import run, until
from zk_support import USERS, Load, consumer, key, provider, provider_started

from stages.harness.threads import BackgroundServer
from stages.harness.zookeeper import ZooKeeperEnsemble, expire_session, temporary_chroot
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.user_stub import UserApi
from stages.v3_x import Server, ServerConfig, ZooKeeperRegistry
from stages.v3_x.registry import providers_path


def test_losing_an_ensemble_member_even_the_leader_fails_no_call() -> None:
    with ZooKeeperEnsemble() as ensemble:
        async def scenario() -> None:
            with provider(ensemble.hosts) as first, provider(ensemble.hosts) as second:
                async with consumer(ensemble.hosts) as client:
                    view = await client.view(USERS)
                    await until(lambda: len(view.candidates) == 2, 15, "both providers")
                    load = Load(client)
                    leader = ensemble.leader()
                    assert leader is not None
                    await asyncio.to_thread(ensemble.kill_member, leader)
                    await asyncio.to_thread(ensemble.wait_for_quorum)
                    ok_after = load.ok
                    await until(lambda: load.ok > ok_after + 300, 15, "calls after the loss")
                    # The view survived the election, and a change still reaches it.
                    assert set(view.candidates) == {key(first), key(second)}
                    async with provider_started(ensemble.hosts) as third:
                        await until(lambda: key(third) in view.candidates, 20,
                                    "a provider registered after the election")
                    await load.stop()
                    assert not load.failed, load.failed

        run(scenario, 120)


class RegistryMachine(RuleBasedStateMachine):
    """Providers (in this process, each with its own ZooKeeper session) come, go, crash and
    have their sessions expired in any order; a consumer's view must end equal to ZooKeeper's
    list once things settle."""

    hosts = ""

    def __init__(self) -> None:
        super().__init__()
        self.providers: dict[str, BackgroundServer[Server]] = {}
        self.loop = asyncio.new_event_loop()
        self.client = None
        self.zk = KazooClient(hosts=self.hosts)
        self.zk.start(10)

        async def make_view() -> object:
            self._consumer = consumer(self.hosts)
            self.client = await self._consumer.__aenter__()
            return await self.client.view(USERS)

        self.view = self.loop.run_until_complete(make_view())

    def registered(self) -> set[str]:
        path = providers_path(USERS)
        return set(self.zk.get_children(path)) if self.zk.exists(path) else set()

    @rule()
    def add(self) -> None:
        config = ServerConfig(deregister_delay=0.01, shutdown_grace=0.5)

        def make() -> Server:
            server = Server(config, registry=ZooKeeperRegistry(self.hosts, session_timeout=0.8))
            server.bind(UserApi, UserApiImpl(), inline=True)
            return server

        started = BackgroundServer(make).start()
        assert started.server is not None
        self.providers[":".join(map(str, started.address))] = started

    @precondition(lambda self: self.providers)
    @rule(data=st.data())
    def remove_gracefully(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.providers)))
        self.providers.pop(name).stop()

    @precondition(lambda self: self.providers)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        # The process dies without a word: its session simply stops (closed without deleting).
        name = data.draw(st.sampled_from(sorted(self.providers)))
        background = self.providers.pop(name)
        assert background.server is not None
        registry = background.server.registry
        assert isinstance(registry, ZooKeeperRegistry)
        registry.client.stop()  # the session ends: ZooKeeper removes its entries
        background.stop()  # then the rest of the process goes (it can withdraw nothing now)

    @precondition(lambda self: self.providers)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.providers)))
        server = self.providers[name].server
        assert server is not None and isinstance(server.registry, ZooKeeperRegistry)
        expire_session(server.registry.client, self.hosts)

    @invariant()
    def the_view_settles_to_what_zookeeper_holds(self) -> None:
        expected = set(self.providers)

        async def settle() -> None:
            await until(lambda: self.registered() == expected, 15, "ZooKeeper to settle")
            await until(lambda: set(self.view.candidates) == expected, 15,  # type: ignore[attr-defined]
                        f"the view to equal ZooKeeper's {sorted(expected)}")

        self.loop.run_until_complete(settle())

    def teardown(self) -> None:
        for background in self.providers.values():
            background.stop()
        self.loop.run_until_complete(self._consumer.__aexit__(None, None, None))
        self.loop.close()
        self.zk.stop()
        self.zk.close()


def test_random_arrivals_departures_crashes_and_expiries_leave_the_view_equal_to_zookeeper(
        zookeeper: str) -> None:
    with temporary_chroot(zookeeper) as hosts:
        RegistryMachine.hosts = hosts
        state_machine = RegistryMachine.TestCase
        state_machine.settings = settings(max_examples=3, stateful_step_count=8, deadline=None,
                                          suppress_health_check=list(HealthCheck))
        state_machine().runTest()


def test_a_provider_shuts_down_promptly_while_zookeeper_is_gone() -> None:
    # Its entry cannot be withdrawn (its session's end removes it); waiting for ZooKeeper to
    # come back would hold the shutdown for ever.
    import time

    from stages.harness.zookeeper import LocalZooKeeper

    with LocalZooKeeper() as zk:
        process = provider(zk.hosts).start()
        zk.stop()
        started = time.monotonic()
        assert process.stop(timeout=20) == 0
        assert time.monotonic() - started < 8
