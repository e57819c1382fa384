"""Helpers of the v3.x tests: provider processes, a consumer, and a load that counts failures."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from kazoo.client import KazooClient

from stages.harness.process import ServerProcess
from stages.v2_0.api import address_of
from stages.v2_0.user_stub import UserApi
from stages.v3_x import Client, ClientConfig, RpcError, ZooKeeperRegistry

USERS = address_of(UserApi)


def provider(hosts: str, *extra: str) -> ServerProcess:
    """A provider process, its ZooKeeper session short so that its death shows quickly."""
    return ServerProcess("stages.v3_x", ["--zk", hosts, "--session-timeout", "1.0",
                                         "--min-ping-interval", "0.05", *extra])


def key(process: ServerProcess) -> str:
    return f"{process.host}:{process.port}"


@contextmanager
def zk_client(hosts: str) -> Iterator[KazooClient]:
    """A plain kazoo client without credentials: to write settings, or look at what the
    registries left; stopped even when the test fails."""
    zk = KazooClient(hosts=hosts)
    zk.start(10)
    try:
        yield zk
    finally:
        zk.stop()
        zk.close()


@asynccontextmanager
async def consumer(hosts: str, **config: Any) -> AsyncIterator[Client]:
    client = Client(ZooKeeperRegistry(hosts, session_timeout=2.0),
                    ClientConfig(heartbeat_interval=0.5, **config))
    try:
        yield client
    finally:
        await client.aclose()


class Load:
    """Calls get_user from ``workers`` tasks until stopped; counts successes and failures."""

    def __init__(self, client: Client, workers: int = 8) -> None:
        self.users = client.async_proxy(UserApi)
        self.ok = 0
        self.failed: collections.Counter[str] = collections.Counter()
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._work(i)) for i in range(workers)]

    async def _work(self, i: int) -> None:
        while not self._stop.is_set():
            try:
                await self.users.get_user(1 + i)
                self.ok += 1
            except RpcError as exc:
                self.failed[type(exc).__name__] += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)




@asynccontextmanager
async def provider_started(hosts: str, *extra: str) -> AsyncIterator[ServerProcess]:
    """A provider process started and stopped off the event loop: starting one takes seconds,
    and the calls and heartbeats of a test under load must go on meanwhile."""
    process = provider(hosts, *extra)
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)
