"""The v3.x server (provider): v2.1's server, registered in a registry while it serves.

A provider announces each interface it has bound once it listens, and withdraws the
announcements when it shuts down, in an order that loses no call:

1. **withdraw** its registry entries: consumers' watches fire and they stop choosing it;
2. **wait** ``deregister_delay``, for the news to reach them;
3. **drain**: v2.1's graceful shutdown, GOAWAY to every client, calls in flight finish, and a
   call that still arrives is refused with UNAVAILABLE *without being run*, which a v3 consumer
   sends to another provider.

A rolling restart of the providers of an interface, one at a time, therefore costs no failed
call. A provider that dies instead (killed, frozen, cut off) cannot withdraw anything: its
entries disappear when its ZooKeeper session expires, and its consumers have stopped sending to it
before that, when its connections failed (see :mod:`stages.v3_x.client`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from stages.v2_1 import server as v2_1
from stages.v3_x.config import ServerConfig
from stages.v3_x.registry import ProviderInfo, Registry

__all__ = ["Server"]

log = logging.getLogger(__name__)


class Server(v2_1.Server):
    """A v2.1 server that registers what it serves.

    Usage::

        server = Server(ServerConfig(port=0), registry=ZooKeeperRegistry("127.0.0.1:2181"))
        server.bind(UserApi, UserApiImpl(), inline=True)
        async with server:          # listening, then registered
            await server.serve_forever()
        # on leaving: withdrawn, drained, closed; the registry's session closed

    Args:
        config: v2.1's settings, plus weight, version and the deregistration delay.
        registry: where to register. The server starts it and closes it.
    """

    config: ServerConfig

    def __init__(self, config: ServerConfig | None = None, *, registry: Registry) -> None:
        super().__init__(config or ServerConfig())
        self.registry = registry
        self.registered: dict[str, ProviderInfo] = {}

    def provider_info(self, api_address: str) -> ProviderInfo:
        """The registry entry of this server for one bound interface."""
        host, port = self.address
        binding = self._bindings[api_address]
        return ProviderInfo(host=host, port=port, weight=self.config.weight,
                            serializers=tuple(self.config.serializers),
                            methods=tuple(binding.spec.methods), version=self.config.version,
                            started_at=time.time())

    async def start(self) -> None:
        """Listen, then register every bound interface."""
        await super().start()
        try:
            await self.registry.start()
            for api_address in self._bindings:
                info = self.provider_info(api_address)
                await self.registry.register(api_address, info)
                self.registered[api_address] = info
        except BaseException:
            await super().aclose(grace=0)
            raise
        log.info("registered %s at %s in %s", ", ".join(self.registered),
                 ":".join(map(str, self.address)), self.registry.describe())

    async def aclose(self, grace: float | None = None) -> None:
        """Withdraw, wait for consumers to notice, drain (v2.1), close the registry."""
        if self._server is None:
            return
        registered, self.registered = self.registered, {}
        for api_address, info in registered.items():
            try:
                await self.registry.unregister(api_address, info)
            except Exception as exc:  # the session's end withdraws it anyway
                log.warning("could not withdraw %s: %s", api_address, exc)
        if registered:
            await asyncio.sleep(self.config.deregister_delay)
        await super().aclose(grace)
        await self.registry.aclose()
