"""``python -m stages.v3_x demo``: the whole v3.x story, one version after the other, in about
twenty seconds, against a real ZooKeeper (a local one unless ``--zk`` names yours).

3.0: providers register and a consumer finds them. 3.1: a balancer spreads the calls. 3.2: a
provider dies under load and no call fails; a graceful stop loses nothing; a frozen provider's
circuit breaker opens, and closes once it answers again. 3.3: the config
center shifts traffic, degrades a method and refuses a bad document while calls go on; every
instance reports the settings version it holds; Prometheus scrapes the metrics; and a client
that did not come through the registry is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from stages.harness.process import ServerProcess
from stages.harness.prometheus import LocalPrometheus, prometheus_available, sample_value
from stages.harness.zookeeper import resolve_zookeeper
from stages.v2_0.user_stub import User, UserApi
from stages.v2_1 import client as v2_1_client
from stages.v3_x.breaker import BreakerConfig, State, Transition
from stages.v3_x.client import Client
from stages.v3_x.config import ClientConfig
from stages.v3_x.errors import RemoteError, RpcError
from stages.v3_x.metrics import ClientMetrics
from stages.v3_x.policy import CallPolicy
from stages.v3_x.registry import ZooKeeperRegistry, consumers_path, providers_path

__all__ = ["demo"]

USERS = UserApi.__rpc_api__.address  # type: ignore[attr-defined]


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


class Calls:
    """``get_user`` calls, counted per provider (from the view's candidates) and by failure."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.users = client.async_proxy(UserApi)

    async def run(self, count: int) -> tuple[dict[str, int], int]:
        view = await self.client.view(USERS)
        before = {key: c.calls for key, c in view.candidates.items()}
        failed = 0
        for i in range(count):
            try:
                await self.users.get_user(1 + i % 1000)
            except RpcError:
                failed += 1
        shares = {key: c.calls - before.get(key, 0) for key, c in view.candidates.items()}
        return {key: n for key, n in sorted(shares.items()) if n}, failed


def provider_args(hosts: str) -> list[str]:
    # The consumer pings a silent provider every 0.2 s, so the providers allow it; a 4 s
    # session makes a dead provider's entry go within seconds.
    return ["--zk", hosts, "--min-ping-interval", "0.1", "--session-timeout", "4",
            "--token", "auto", "--metrics-port", "0"]


async def demo(given_zk: str | None) -> int:
    with resolve_zookeeper(given_zk) as hosts:
        print(f"registry: ZooKeeper at {hosts}")
        providers = [ServerProcess("stages.v3_x", provider_args(hosts)).start() for _ in range(3)]
        registry = ZooKeeperRegistry(hosts)
        client = Client(registry, ClientConfig(heartbeat_interval=0.2))
        metrics = ClientMetrics()
        metrics.attach(client)
        try:
            await story(hosts, client, registry, metrics, providers)
        finally:
            await client.aclose()
            metrics.close()
            for provider in providers:
                provider.stop()
    return 0


async def story(hosts: str, client: Client, registry: ZooKeeperRegistry, metrics: ClientMetrics,
                providers: list[ServerProcess]) -> None:
    calls = Calls(client)
    print("\n== 3.0 registration and discovery")
    view = await client.view(USERS)
    await until(lambda: len(view.candidates) == 3, 10)
    print(f"consumer sees {len(view.candidates)} providers of UserApi: "
          f"{', '.join(sorted(view.candidates))}")

    print("\n== 3.1 load balancing")
    shares, failed = await calls.run(300)
    print(f"300 calls, balanced by {client.balancer.name}: {shares}, {failed} errors")
    print("  (p2c sends each call to the faster of two providers drawn at random: one call at a "
          "time, the fastest gets about two thirds)")

    print("\n== 3.2 fault tolerance")
    client.set_policy(UserApi, CallPolicy(mode="failover", idempotent=True,
                                          fallback=lambda user_id: User(user_id, "(degraded)", "")))
    victim = providers[0]
    victim_key = f"{victim.host}:{victim.port}"
    victim.kill()
    start = time.monotonic()
    retries = client.stats["retries"] + client.stats["redirects"]
    shares, failed = await calls.run(300)
    print(f"killed provider {victim_key}; 300 calls meanwhile, failover: {shares}, {failed} "
          f"failed, {client.stats['retries'] + client.stats['redirects'] - retries} sent again")
    await until(lambda: victim_key not in view.candidates, 30)
    print(f"its ZooKeeper session expired and its entry went away after "
          f"{time.monotonic() - start:.1f} s; the consumer had stopped using it before")
    providers[0] = ServerProcess("stages.v3_x", provider_args(hosts)).start()
    await until(lambda: len(view.candidates) == 3, 10)
    print(f"a new provider registered; the consumer sees {len(view.candidates)} again")
    stopping = asyncio.ensure_future(asyncio.to_thread(providers[1].stop))  # SIGTERM
    made = failed = 0
    while not stopping.done():
        _, errors = await calls.run(20)
        made, failed = made + 20, failed + errors
    await stopping
    print(f"stopped a provider gracefully while calls went on: {made} calls, {failed} failed")
    providers[1] = ServerProcess("stages.v3_x", provider_args(hosts)).start()
    await until(lambda: len(view.candidates) == 3, 10)
    await breakers(hosts, providers[2])

    print("\n== 3.3 config center")
    keys = sorted(view.candidates)
    favoured = keys[0]
    document = {"balancer": "weighted", "providers": {favoured: {"weight": 800}}}
    written = time.monotonic()
    version = await registry.write_config(USERS, json.dumps(document).encode())
    await until(lambda: USERS in client.settings and client.settings[USERS].version == version, 5)
    print(f"wrote {json.dumps(document)}: applied by the consumer "
          f"{(time.monotonic() - written) * 1000:.0f} ms later (version {version})")
    shares, failed = await calls.run(500)
    print(f"500 calls: {shares}, {failed} failed ({favoured} has weight 800 against 100 each)")
    version = await registry.write_config(
        USERS, json.dumps({"methods": {"get_user": {"force_fallback": True}}}).encode())
    await until(lambda: client.settings[USERS].version == version, 5)
    sent = sum(c.calls for c in view.candidates.values())
    user = await calls.users.get_user(7)
    print(f"forced degradation of get_user: answered {user.name!r} by the fallback, "
          f"{sum(c.calls for c in view.candidates.values()) - sent} calls sent to providers")
    await registry.write_config(USERS, b'{"api": {"timeout": -3}}')
    await until(lambda: client.settings_refused == 1, 5)
    print(f"a bad document (timeout -3) was refused: version {client.settings[USERS].version} "
          f"stays in force")
    version = await registry.write_config(USERS, b'{}')
    await until(lambda: client.settings[USERS].version == version, 5)
    await calls.run(10)
    await until(lambda: set(reported(registry)) == {version}, 5)
    print(f"settings cleared (version {version}); every consumer and provider reports it: "
          f"{reported(registry)}")

    print("\n== 3.3 monitoring")
    host, port = metrics.serve(0)
    snapshot = metrics.snapshot()["rpc_client_calls_total"]
    print(f"the consumer's metrics are on http://{host}:{port}/metrics; calls by outcome: "
          f"{dict(sorted((k[2], int(v)) for k, v in snapshot.items()))}")
    targets = [p.metrics_address for p in providers if p.metrics_address] + [f"{host}:{port}"]
    if prometheus_available():
        with LocalPrometheus(targets, scrape_interval=0.5) as prometheus:
            prometheus.wait_for_targets_up(len(targets), timeout=30)
            result = prometheus.query('sum(rpc_server_calls_total{method="get_user"})')
            served = sample_value(result[0]) if result else 0
            print(f"a real Prometheus scrapes {len(targets)} targets; it counts {served:.0f} calls "
                  f"of get_user served by the providers running now")
    else:
        print("(Prometheus is not installed: `make setup` installs it)")

    print("\n== 3.3 who may call")
    direct = v2_1_client.Client(*providers[2].address)
    try:
        await direct.async_proxy(UserApi).get_user(7)
        print("a direct client was served: the token did not work")
    except RemoteError as exc:
        print(f"a client that dialled {providers[2].host}:{providers[2].port} directly, without "
              f"the token from the registry: refused, {exc.status.name}")
    finally:
        await direct.aclose()


async def breakers(hosts: str, frozen: ServerProcess) -> None:
    """A consumer with circuit breakers (and no outlier detection, which would set the provider
    aside first): a frozen provider's breaker opens, and closes again once it answers."""
    client = Client(ZooKeeperRegistry(hosts), ClientConfig(
        heartbeat_interval=0.2, timeout=0.3, balancer="round_robin", outlier=None,
        breaker=BreakerConfig(window_size=4, minimum_calls=2, wait_duration=1.0)))
    client.set_policy(UserApi, CallPolicy(mode="failover", idempotent=True))
    changes: list[Transition] = []
    client.breaker_listeners.append(changes.append)
    key = f"{frozen.host}:{frozen.port}"
    try:
        view = await client.view(USERS)
        await until(lambda: len(view.candidates) == 3, 10)
        calls = Calls(client)
        await calls.run(6)
        frozen.pause()
        shares, failed = await calls.run(30)
        print(f"froze provider {key} (SIGSTOP); a consumer with circuit breakers, round robin, "
              f"0.3 s timeout, failover: 30 calls {shares}, {failed} failed (a call that waits "
              f"out its deadline on the frozen provider has no time left to go elsewhere); once "
              f"its breaker opened, calls skipped it")
        frozen.resume()
        while not (changes and changes[-1].new is State.CLOSED):
            await calls.run(5)
        print("its breaker for get_user went " + " -> ".join(
            [changes[0].old.value] + [f"{c.new.value} ({c.reason})" for c in changes
                                      if c.name.startswith(key)]))
    finally:
        frozen.resume()
        await client.aclose()


def reported(registry: ZooKeeperRegistry) -> list[int]:
    """The settings versions in the consumers' and the providers' entries, read from ZooKeeper."""
    zk = registry.client
    versions = []
    for path in (consumers_path(USERS), providers_path(USERS)):
        for name in zk.get_children(path):
            entry = json.loads(zk.get(f"{path}/{name}")[0])
            versions.append(entry.get("settings_version", -1))
    return versions
