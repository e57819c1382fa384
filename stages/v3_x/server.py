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
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from stages.v1_0.errors import Status, clip
from stages.v1_0.protocol import Frame
from stages.v2_0.serializers import ErrorInfo, Invocation, Outcome
from stages.v2_1 import server as v2_1
from stages.v2_1.server import Run
from stages.v3_x import deadline
from stages.v3_x.config import ServerConfig
from stages.v3_x.incident import IncidentApi, IncidentControl, Incidents
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
        #: Calls answered "overloaded" (see ``ServerConfig.max_calls_per_api``).
        self.overloaded = 0
        #: Calls cancelled because their caller sent CANCEL (see :mod:`stages.v3_x.deadline`).
        self.cancelled = 0
        #: Staged incidents (see :mod:`stages.v3_x.incident` and :meth:`enable_incidents`).
        self.incidents = Incidents()
        #: API addresses served but not registered (the incident control).
        self.unlisted: set[str] = set()

    def enable_incidents(self) -> str:
        """Bind :class:`~stages.v3_x.incident.IncidentApi` (unlisted), so that incidents can be
        staged on this provider. Returns its address."""
        address = self.bind(IncidentApi, IncidentControl(self.incidents), inline=True)
        self.unlisted.add(address)
        return address

    def make_connection(self) -> v2_1.ServerConnection:
        return ProviderConnection(self)

    def resolve(self, invocation: Invocation) -> Callable[..., Any] | tuple[Status, Outcome]:
        """v2.0's resolve, then the per-API cap (past it: UNAVAILABLE, the call not run), then a
        staged ``slow`` incident."""
        target = super().resolve(invocation)
        if isinstance(target, tuple) or invocation.address in self.unlisted:
            return target
        cap = self.config.max_calls_per_api
        if cap is not None and self.calls_by_api[invocation.address] >= cap:
            self.overloaded += 1
            return Status.UNAVAILABLE, Outcome(error=ErrorInfo(
                "status.UNAVAILABLE", f"overloaded: {cap} calls of {clip(invocation.address)} "
                "are running on this provider; the call was not run"))
        incident = self.incidents.active(asyncio.get_running_loop().time())
        if incident is not None and incident.kind == "slow":
            return _late(target, self.runs[invocation.address, invocation.method], incident.delay)
        return target

    def provider_info(self, api_address: str) -> ProviderInfo:
        """The registry entry of this server for one bound interface."""
        host, port = self.address
        binding = self._bindings[api_address]
        return ProviderInfo(host=host, port=port, weight=self.config.weight,
                            serializers=tuple(self.config.serializers),
                            methods=tuple(binding.spec.methods), version=self.config.version,
                            started_at=time.time(), features=deadline.FEATURES)

    async def start(self) -> None:
        """Listen, then register every bound interface."""
        await super().start()
        try:
            await self.registry.start()
            for api_address in self._bindings.keys() - self.unlisted:
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


class ProviderConnection(v2_1.ServerConnection):
    """v2.1's connection, plus the deadline and cancel frames of v3.2 (see
    :mod:`stages.v3_x.deadline`), and cut under every call by a staged ``fail`` incident."""

    server: Server

    def on_frame(self, frame: Frame) -> Frame | None:
        if frame.type == deadline.TIMED_REQUEST:
            request, seconds = deadline.untimed(frame)
            if seconds <= 0:
                return self.server.error_frame(frame.request_id, Status.UNAVAILABLE,
                                               "the caller's deadline passed before the call "
                                               "started; the call was not run")
            due = self._loop.time() + seconds
            token = deadline.serving_until(due)
            try:
                answer = self._on_request(request)
            finally:
                deadline.reset(token)
            call = self.running.get(frame.request_id)
            if call is not None:  # it runs on (a task, a thread): stop it when its time is up
                timer = self._loop.call_at(due, call.cancel)
                call.add_done_callback(lambda _: timer.cancel())
            return answer
        if frame.type == deadline.CANCEL:
            call = self.running.get(frame.request_id)
            if call is not None and call.cancel():
                self.server.cancelled += 1
            return None
        return super().on_frame(frame)

    def _on_request(self, frame: Frame) -> Frame | None:
        incident = self.server.incidents.active(self._loop.time())
        if incident is not None and incident.kind == "fail":
            prepared = self.server.prepare(frame)
            if not isinstance(prepared, Frame) and prepared[1].address not in self.server.unlisted:
                self.abort()
                return None
        return super()._on_request(frame)


def _late(target: Callable[..., Any], run: Run, delay: float) -> Callable[..., Any]:
    """``target``, run ``delay`` seconds late: in its thread, or on the loop without blocking it
    (an inline or coroutine method then runs as a task)."""
    if run is Run.THREAD:
        def late_in_thread(*args: Any, **kwargs: Any) -> Any:
            time.sleep(delay)
            return target(*args, **kwargs)
        return late_in_thread

    async def late(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay)
        value = target(*args, **kwargs)
        return await value if inspect.isawaitable(value) else value
    return late
