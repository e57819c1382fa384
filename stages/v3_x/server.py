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
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from stages.v1_0.errors import Status, clip
from stages.v1_0.protocol import Frame
from stages.v2_0.serializers import ErrorInfo, Invocation, Outcome, Serializer
from stages.v2_1 import server as v2_1
from stages.v2_1.server import Run
from stages.v3_x import deadline, security
from stages.v3_x.config import ServerConfig
from stages.v3_x.errors import ConfigError
from stages.v3_x.incident import IncidentApi, IncidentControl, Incidents
from stages.v3_x.registry import ProviderInfo, Registry
from stages.v3_x.settings import ApiSettings

__all__ = ["Server", "Served", "UNKNOWN"]

log = logging.getLogger(__name__)

#: The API or method of a :class:`Served` call that names none this server serves.
UNKNOWN = "(unknown)"
#: When the call being answered arrived (``time.perf_counter()``); set for each request.
_arrived: contextvars.ContextVar[float] = contextvars.ContextVar("arrived")


class Served(NamedTuple):
    """One call answered by this provider, as ``Server.call_listeners`` receive it (v3.3's
    metrics listen). A named tuple, like :class:`~stages.v3_x.client.Attempt`: one per call.

    Attributes:
        api, method: what was called (the address and method of a call that was decoded).
        status: the status it was answered with.
        seconds: from its request's arrival to its answer.
    """

    api: str
    method: str
    status: Status
    seconds: float


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
        #: Called with a :class:`Served` for every decoded call answered (v3.3's metrics).
        self.call_listeners: list[Callable[[Served], None]] = []
        #: What consumers must show before their calls run (v3.3); empty for nothing.
        self.token = security.new_token() if self.config.token == "auto" else self.config.token
        #: Wrong tokens shown.
        self.unauthenticated = 0
        #: The config center's settings per registered API (v3.3): the last good ones, checked
        #: as consumers check them; their version goes into this provider's registry entries.
        self.settings: dict[str, ApiSettings] = {}
        #: Settings documents refused (the last good ones stayed).
        self.settings_refused = 0

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

    def respond(self, request_id: int, serializer: Serializer, invocation: Invocation,
                status: Status, outcome: Outcome) -> Frame:
        """v2.0's answer, told to the ``call_listeners``: every call that was decoded ends here,
        whether it ran inline, as a task or in a thread, or was refused."""
        frame = super().respond(request_id, serializer, invocation, status, outcome)
        if self.call_listeners:
            # Names a client sent are told only when they are served here: a client inventing
            # names must not invent metric labels.
            binding = self._bindings.get(invocation.address)
            api = invocation.address if binding is not None else UNKNOWN
            method = (invocation.method if binding is not None
                      and invocation.method in binding.spec.methods else UNKNOWN)
            served = Served(api, method, Status(frame.status),
                            time.perf_counter() - _arrived.get(time.perf_counter()))
            for listener in self.call_listeners:
                listener(served)
        return frame

    def provider_info(self, api_address: str) -> ProviderInfo:
        """The registry entry of this server for one bound interface."""
        host, port = self.address
        binding = self._bindings[api_address]
        return ProviderInfo(host=host, port=port, weight=self.config.weight,
                            serializers=tuple(self.config.serializers),
                            methods=tuple(binding.spec.methods), version=self.config.version,
                            started_at=time.time(), features=deadline.FEATURES,
                            token=self.token)

    async def start(self) -> None:
        """Listen (over TLS if configured), then register every bound interface."""
        tls = self.config.tls
        if tls is None:
            await super().start()
        else:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self.make_connection, self.config.host,
                                                    self.config.port, ssl=tls.server_context())
        try:
            await self.registry.start()
            for api_address in self._bindings.keys() - self.unlisted:
                info = self.provider_info(api_address)
                await self.registry.register(api_address, info)
                self.registered[api_address] = info
        except BaseException:
            # Registered in part (an API refused, say): close the session, so that the entries
            # made go at once, not when the session would have expired.
            self.registered = {}
            await super().aclose(grace=0)
            await self.registry.aclose()
            raise
        for api_address in self.registered:
            await self.registry.watch_config(api_address, functools.partial(
                self._on_settings, api_address))
        log.info("registered %s at %s in %s", ", ".join(self.registered),
                 ":".join(map(str, self.address)), self.registry.describe())

    def _on_settings(self, api_address: str, data: bytes, version: int) -> None:
        """A settings document of a registered API (on the loop): checked whole, as consumers
        check it, and its version reported in this provider's entry."""
        info = self.registered.get(api_address)
        if version < 0 or info is None:
            return
        try:
            self.settings[api_address] = ApiSettings.parse(data, version)
        except ConfigError as exc:
            self.settings_refused += 1
            log.warning("settings of %s (version %d) refused: %s", api_address, version, exc)
            return
        info = replace(info, settings_version=version)
        self.registered[api_address] = info
        report = asyncio.get_running_loop().create_task(
            self.registry.register(api_address, info))
        report.add_done_callback(_log_failure)

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
    :mod:`stages.v3_x.deadline`), the token of v3.3 (see :mod:`stages.v3_x.security`), and cut
    under every call by a staged ``fail`` incident."""

    server: Server

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        #: Whether calls may run: the right token was shown, or none is asked for.
        self.authenticated = not server.token

    def on_frame(self, frame: Frame) -> Frame | None:
        if frame.type == security.AUTH:
            # A wrong token leaves the connection open and unauthenticated: its calls are then
            # answered with a clear refusal, rather than a connection closed without a reason.
            self.authenticated = (not self.server.token
                                  or security.token_matches(self.server.token, frame))
            self.server.unauthenticated += not self.authenticated
            return None
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
        if not self.authenticated:  # refused before anything of the request is decoded
            return self.server.error_frame(
                frame.request_id, Status.UNAUTHENTICATED, "this provider takes calls only from "
                "consumers that show its token, which they read from the registry; the call "
                "was not run")
        if self.server.call_listeners:
            # A task or a thread started for this call copies the context: its answer, later,
            # still knows when the request arrived.
            _arrived.set(time.perf_counter())
        incident = self.server.incidents.active(self._loop.time())
        if incident is not None and incident.kind == "fail":
            prepared = self.server.prepare(frame)
            if not isinstance(prepared, Frame) and prepared[1].address not in self.server.unlisted:
                self.abort()
                return None
        return super()._on_request(frame)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not report the settings version: %s", task.exception())


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
