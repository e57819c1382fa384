"""The v3.x client (consumer): discover providers in a registry, and balance calls across them.

v2.1's client talked to one server through one :class:`~stages.v2_1.client.Endpoint`. v3's
holds one endpoint per provider, and a *view* per interface: the providers the registry lists
for it, each with what the client measures about it (a :class:`~stages.v3_x.balancer.Candidate`:
calls in flight, peak-EWMA latency). For every call the balancer picks one provider among the
view's candidates that can take a call now. Everything else is v2.1's: proxies, the interceptor
chain, connections, heartbeats, deadlines.

What happens when providers come and go:

* **The registry's view changes** (a provider registered, deregistered, or its session expired):
  the listener updates the view on the client's loop. A new provider gets an endpoint (its
  connection opens on its first call); a removed one leaves the candidates at once, and its
  connection is left to end by itself (calls in flight on it finish).
* **A provider dies before the registry knows.** A killed provider's connection fails at once,
  connecting to it again fails, and its endpoint backs off: a provider whose endpoint is
  backing off, or which said GOAWAY, is not a candidate. The client does not wait for the
  provider's ZooKeeper session to expire.
* **A provider stops answering** (frozen, or cut off). Its kernel may still accept connections,
  so connecting and sending succeed; but the first call it leaves unanswered (timed out, or its
  connection declared dead by the heartbeat) sets it aside for a while: outlier detection
  (:mod:`stages.v3_x.outlier`), v3.2.
* **A call that was certainly not run goes to another provider**: when no connection could be
  opened (nothing was sent), or when the provider answered UNAVAILABLE, which a server does
  only for a call it refused without running it (it is shutting down, or, from v3.2, the API is
  at its cap of running calls: "overloaded"). A call that was sent and
  then lost its connection or its deadline may have run; whether to retry it is a policy (v3.2).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stages.v1_0.errors import clip
from stages.v1_0.protocol import Frame
from stages.v2_0.api import ApiSpec, api_spec
from stages.v2_0.serializers import Serializer
from stages.v2_1 import client as v2_1
from stages.v2_1.blocking import DirectConnection, DirectPool
from stages.v2_1.client import Call, Endpoint, Interceptor
from stages.v3_x import deadline, security
from stages.v3_x.balancer import Balancer, Candidate, make_balancer
from stages.v3_x.breaker import CircuitBreaker, Transition
from stages.v3_x.config import ClientConfig
from stages.v3_x.errors import (
    CircuitOpenError,
    ConfigError,
    ConnectionClosedError,
    NoProviderError,
    RpcTimeoutError,
    Status,
    TransportError,
)
from stages.v3_x.outlier import OutlierDetector
from stages.v3_x.policy import DEFAULT_POLICY, CallPolicy
from stages.v3_x.registry import ProviderInfo, Registry
from stages.v3_x.retry import RetryBudget
from stages.v3_x.settings import ApiSettings

__all__ = ["Client", "View", "Attempt", "Called", "Step"]

log = logging.getLogger(__name__)


@dataclass
class View:
    """The providers of one interface as this client knows them.

    Attributes:
        api_address: the interface's address.
        providers: the registry's entries, by key.
        candidates: the balancer's candidates, by key (one per provider).
        changes: how many times the registry's list was received (the first included).
    """

    api_address: str
    providers: dict[str, ProviderInfo] = field(default_factory=dict)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    changes: int = 0


class Attempt(NamedTuple):
    """One attempt of a call on one provider, as ``Client.attempt_listeners`` receive it.

    A named tuple rather than a frozen dataclass: one is made per call, and a named tuple is
    made in 0.23 µs, a frozen dataclass in 1.3 µs (``timeit``).

    Attributes:
        api, method: what was called.
        provider: the provider's key, ``host:port``.
        seconds: from sending to the answer or the failure.
        error: the failure's type name (``RpcTimeoutError``, ``ConnectionClosedError``,
            ``CancelledError``...), or None if the provider answered (even with an exception of
            the remote method: the provider worked).
    """

    api: str
    method: str
    provider: str
    seconds: float
    error: str | None


class Called(NamedTuple):
    """One call once it ended, every attempt and any fallback in, as ``Client.call_listeners``
    receive it (v3.3's metrics listen).

    Attributes:
        api, method: what was called.
        seconds: from the call to its value or its failure.
        error: what the caller got raised, or None if it got a value.
    """

    api: str
    method: str
    seconds: float
    error: BaseException | None


class Step(NamedTuple):
    """The next attempt of a call, as :meth:`Client._plan` decides it: send the request to the
    provider ``key`` and wait at most ``timeout`` seconds for its answer."""

    key: str
    timeout: float


class Client(v2_1.Client):
    """Calls the providers of interfaces listed in a registry.

    Usage::

        registry = ZooKeeperRegistry("127.0.0.1:2181")
        with Client(registry) as client:
            users = client.proxy(UserApi)
            users.get_user(1)          # some provider of UserApi, chosen by the balancer

    The client starts the registry on its own event loop when it first needs it (the registry
    is then used from that loop only), and closes it with the client. Calls from async proxies
    run on that loop; calls from blocking proxies run in their callers' threads once the
    interface's providers are known (see :meth:`_blocking_call`), and share the same views,
    balancer, breakers and counters, under :attr:`state_lock`.

    Args:
        registry: where the providers are listed.
        config: v2.1's settings plus the balancing strategy.
        balancer: a balancer object instead of ``config.balancer`` (for a seeded one, say).
        interceptors: hooks around every call, as in v2.1.
        rng: the balancer's random source (seed it for repeatable choices).
        policies: what to do when calls fail, by API address or ``address#method``
            (see :mod:`stages.v3_x.policy`; also :meth:`set_policy`).
    """

    config: ClientConfig

    def __init__(self, registry: Registry, config: ClientConfig | None = None, *,
                 balancer: Balancer | None = None, interceptors: Iterable[Interceptor] = (),
                 rng: random.Random | None = None,
                 policies: Mapping[str, CallPolicy] | None = None) -> None:
        # v2.1's client is built for one address; here the addresses come from the registry.
        super().__init__("registry", 0, config or ClientConfig(), interceptors=interceptors)
        self.registry = registry
        #: TLS towards every provider (v3.3), from ``config.tls``.
        self._tls = self.config.tls.client_context() if self.config.tls is not None else None
        self.balancer = balancer or make_balancer(self.config.balancer, rng)
        self.views: dict[str, View] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._watching: dict[str, asyncio.Task[View]] = {}
        self._registry_started: asyncio.Task[None] | None = None
        #: Policies by API address, or ``address#method`` (see :meth:`set_policy`).
        self.policies: dict[str, CallPolicy] = dict(policies or {})
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        #: Called with every attempt of every call on a provider (v3.3's metrics listen).
        self.attempt_listeners: list[Callable[[Attempt], None]] = []
        #: Called with every breaker's every state change (the notebook and metrics listen).
        self.breaker_listeners: list[Callable[[Transition], None]] = []
        self.budget = RetryBudget(now=time.monotonic())
        #: Providers set aside after leaving a call unanswered (None: no outlier detection).
        self.outliers = (OutlierDetector(self.config.outlier) if self.config.outlier is not None
                         else None)
        #: Settings from the config center (v3.3), by API address: the last good ones.
        self.settings: dict[str, ApiSettings] = {}
        #: Settings documents refused (each is logged; the last good settings stay in force).
        self.settings_refused = 0
        self._balancers: dict[str, Balancer] = {}
        self._rng = rng
        self._effective: dict[tuple[str, str], CallPolicy] = {}
        #: Counted for the curious: "retries" (a call sent again after it may have run: failover),
        #: "redirects" (sent elsewhere because it was not sent or not run: no connection, or the
        #: provider refused it while going away), "ejections" (providers set aside by outlier
        #: detection), fallbacks, failsafe defaults, forks.
        self.stats: collections.Counter[str] = collections.Counter()
        #: Called with every call once it ended (v3.3's metrics listen).
        self.call_listeners: list[Callable[[Called], None]] = []
        #: Calls waiting for their answer, by API address.
        self.in_flight: collections.Counter[str] = collections.Counter()
        #: Held while the state above changes or is decided on: views and candidates, breakers,
        #: retry budget, outlier records, counters; listeners are called holding it. The loop's
        #: thread and the threads of blocking calls both take it, never across any I/O.
        self.state_lock = threading.Lock()
        #: The connections blocking calls own while they wait, one pool per provider.
        self.direct_pools: dict[str, DirectPool] = {}

    def _target(self) -> str:
        return self.registry.describe()

    @property
    def connects(self) -> int:
        """Connections opened so far, to all providers."""
        return sum(endpoint.connects for endpoint in self.endpoints.values())

    # -- the view of an interface ------------------------------------------------------------

    async def view(self, api_address: str) -> View:
        """The view of an interface, watched from the first time it is asked for.

        Raises:
            RegistryUnavailable: the registry could not be reached to read the first list.
        """
        view = self.views.get(api_address)
        if view is not None:
            return view
        task = self._watching.get(api_address)
        if task is None:
            task = self._watching[api_address] = asyncio.get_running_loop().create_task(
                self._watch(api_address))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._watching.pop(api_address, None)

    async def _watch(self, api_address: str) -> View:
        if self._registry_started is None:
            self._registry_started = asyncio.get_running_loop().create_task(self.registry.start())
        try:
            await asyncio.shield(self._registry_started)
        except BaseException:
            self._registry_started = None  # try again on the next call
            raise
        view = View(api_address)
        await self.registry.watch(api_address, lambda providers: self._update(view, providers))
        self.views[api_address] = view
        # The consumer's entry first: applying the settings writes their version into it.
        try:
            await self.registry.register_consumer(api_address)
        except Exception as exc:  # only for operators: a failure here stops no call
            log.info("could not register as a consumer of %s: %s", api_address, exc)
        await self.registry.watch_config(
            api_address, lambda data, version: self._on_settings(api_address, data, version))
        return view

    def _update(self, view: View, providers: Mapping[str, ProviderInfo]) -> None:
        """The registry's current list (on the client's loop): new providers become candidates,
        removed ones leave, weights follow their entries."""
        with self.state_lock:
            self._replace_providers(view, providers)
        log.debug("%s: %d providers", view.api_address, len(view.candidates))

    def _replace_providers(self, view: View, providers: Mapping[str, ProviderInfo]) -> None:
        view.changes += 1
        gone = view.providers.keys() - providers.keys()
        view.providers = dict(providers)
        for key in gone:
            if self.outliers is not None:
                self.outliers.forget(key)
            # It leaves the candidates; its connection is left to end by itself (the GOAWAY of
            # a provider that stops, the heartbeat of one that died), so that no call in flight
            # on it is cut, and a provider that comes back (its session expired and it
            # registered again) finds its connection still there.
            view.candidates.pop(key, None)
        for key, info in providers.items():
            candidate = view.candidates.get(key)
            if candidate is None:
                view.candidates[key] = Candidate(key, self._weight(view.api_address, info))
            else:
                candidate.weight = self._weight(view.api_address, info)
            hello = security.hello(info.token) if info.token else None
            endpoint = self.endpoints.get(key)
            if endpoint is None:
                self.endpoints[key] = Endpoint((info.host, info.port), self.config,
                                               ssl=self._tls, hello=hello)
            else:
                endpoint.hello = hello  # a provider back with a new token: for new connections

    # -- the config center (v3.3) ---------------------------------------------------------------

    def _on_settings(self, api_address: str, data: bytes, version: int) -> None:
        """A new settings document for one API (on the client's loop): applied whole, or
        refused whole, the last good settings staying in force."""
        try:
            settings = ApiSettings.parse(data, version)
            self._check_fallbacks(api_address, settings)
        except ConfigError as exc:
            self.settings_refused += 1  # only the loop's thread counts it
            kept = self.settings.get(api_address)
            log.warning("settings of %s (version %d) refused, version %s stays in force: %s",
                        api_address, version, kept.version if kept else "none", exc)
            return
        with self.state_lock:
            self.settings[api_address] = settings
            if settings.balancer is not None:
                self._balancers[api_address] = make_balancer(settings.balancer, self._rng)
            else:
                self._balancers.pop(api_address, None)
            self._effective.clear()
            view = self.views.get(api_address)
            if view is not None:
                for key, info in view.providers.items():
                    if key in view.candidates:
                        view.candidates[key].weight = self._weight(api_address, info)
        log.info("settings of %s version %d applied", api_address, version)
        loop = asyncio.get_running_loop()
        report = loop.create_task(self.registry.report_settings(api_address, version))
        report.add_done_callback(_report_done)

    def _check_fallbacks(self, api_address: str, settings: ApiSettings) -> None:
        """Forced degradation needs a fallback, which only code can give."""
        scopes = [("api", settings.api, self.policies.get(api_address))]
        scopes += [(f"methods.{name}", call.over(settings.api),
                    self.policies.get(f"{api_address}#{name}") or self.policies.get(api_address))
                   for name, call in settings.methods.items()]
        for what, call, policy in scopes:
            if call.force_fallback and (policy is None or policy.fallback is None):
                raise ConfigError(f"{what}: force_fallback needs a fallback, and {api_address} "
                                  "has none set in code (set_policy)")

    def _weight(self, api_address: str, info: ProviderInfo) -> int:
        settings = self.settings.get(api_address)
        override = settings.providers.get(info.key) if settings is not None else None
        return override.weight if override is not None and override.weight is not None \
            else info.weight

    # -- policies (v3.2) ------------------------------------------------------------------------

    def set_policy(self, interface: type, policy: CallPolicy, *, method: str | None = None) -> None:
        """Use ``policy`` for the calls of ``interface`` (or of one of its methods). Policies
        are immutable: changing one means setting a new one (v3.3's config center does)."""
        address = api_spec(interface).address
        with self.state_lock:
            self.policies[f"{address}#{method}" if method else address] = policy
            self._effective.clear()

    def policy_for(self, call: Call) -> CallPolicy:
        """The method's policy, else the API's, else fail fast; then what the config center
        sets for it on top (v3.3)."""
        key = (call.spec.address, call.method)
        policy = self._effective.get(key)
        if policy is not None:
            return policy
        with self.state_lock:  # not while the config center replaces the settings
            policies = self.policies
            policy = (policies.get(f"{call.spec.address}#{call.method}")
                      or policies.get(call.spec.address) or DEFAULT_POLICY)
            settings = self.settings.get(call.spec.address)
            if settings is not None:
                chosen = settings.for_method(call.method)
                changes: dict[str, Any] = {name: value for name, value in (
                    ("mode", chosen.mode), ("idempotent", chosen.idempotent),
                    ("retries", chosen.retries), ("force_fallback", chosen.force_fallback))
                    if value is not None}
                try:
                    policy = dataclasses.replace(policy, **changes) if changes else policy
                except ConfigError as exc:  # checked when applied; kept safe here too
                    log.warning("settings of %s do not fit %s(): %s", call.spec.address,
                                call.method, exc)
            self._effective[key] = policy
        return policy

    def breaker(self, key: str, method: str, now: float) -> CircuitBreaker | None:
        """The circuit breaker of one provider and method (made on first use), or None if the
        client has no breakers (``config.breaker`` is None)."""
        if self.config.breaker is None:
            return None
        breaker = self.breakers.get((key, method))
        if breaker is None:
            breaker = self.breakers[key, method] = CircuitBreaker(
                f"{key} {method}", self.config.breaker, now=now)
            breaker.listeners.extend(self.breaker_listeners)
        return breaker

    # -- one call --------------------------------------------------------------------------------

    async def invoke(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], serializer: Serializer,
                     timeout: float | None = None) -> Any:
        """v2.1's invoke; a call without a timeout of its own takes the config center's."""
        return await super().invoke(spec, method, args, kwargs, serializer,
                                    self._settings_timeout(spec.address, method, timeout))

    def _settings_timeout(self, api_address: str, method: str,
                          timeout: float | None) -> float | None:
        if timeout is None and (settings := self.settings.get(api_address)) is not None:
            timeout = settings.for_method(method).timeout
        return timeout

    async def _send(self, call: Call) -> Any:
        """The end of the interceptor chain: the call's policy decides what a failure means."""
        policy = self.policy_for(call)
        with _Counted(self, call):
            if policy.force_fallback:
                return self._fallback(call, policy, "forced fallbacks")
            try:
                if policy.mode == "forking":
                    return await self._forking(call, policy)
                return await self._attempts(call, policy)
            except TransportError as exc:  # not answered: unreachable, lost, too late, refused
                return self._gave_up(call, policy, exc)

    def _gave_up(self, call: Call, policy: CallPolicy, exc: TransportError) -> Any:
        """A call that was not answered: its fallback's value, or the failsafe default, or
        (fail fast, failover) the error raised."""
        if policy.fallback is not None:
            return self._fallback(call, policy, "fallbacks")
        if policy.mode == "failsafe":
            with self.state_lock:
                self.stats["failsafe defaults"] += 1
            log.warning("%s() failed (%s: %s); failsafe: returning the default",
                        call.method, type(exc).__name__, exc)
            return policy.default
        raise exc

    def _fallback(self, call: Call, policy: CallPolicy, counted: str) -> Any:
        assert policy.fallback is not None
        with self.state_lock:
            self.stats[counted] += 1
        return policy.fallback(*call.args, **call.kwargs)

    def _plan(self, view: View, call: Call, policy: CallPolicy,
              deadline: float) -> Generator[Step, tuple[Frame, bool], Frame]:
        """The decisions of one call's attempts, apart from their I/O: the provider of each
        attempt, chosen by the balancer, and what a failure means. A call that was certainly not
        run goes to another provider; one that was sent and may have run goes to another only
        (failover) when it is idempotent, and retries and the budget allow.

        A generator, driven by the route that does the I/O (:meth:`_attempts` on the loop,
        :meth:`_blocking_attempts` in a blocking caller's thread) under :attr:`state_lock`. It
        yields each attempt as a :class:`Step`; the route sends it back the answer, with whether
        its time measures the provider (not if it included opening the connection), or throws
        in the attempt's :class:`TransportError`. It returns the answering frame, or raises
        what the caller gets. Closed before its end (the caller was cancelled), it gives back
        what the attempt held.
        """
        self.budget.deposit(time.monotonic())
        tried: set[str] = set()
        failovers = 0
        while True:
            now = time.monotonic()
            chosen = self._choose(view, call, tried, now)
            tried.add(chosen.key)
            breaker = self.breaker(chosen.key, call.method, now)
            if breaker is not None and not breaker.try_acquire(now):
                continue  # half-open, and its trial calls are all out
            remaining = deadline - now
            if remaining <= 0:
                if breaker is not None:
                    breaker.release(now)
                raise RpcTimeoutError(f"no answer for {call.method}() within {call.timeout:.3g} s")
            chosen.started()
            try:
                frame, measured = yield Step(chosen.key, remaining)
            except (ConnectionClosedError, RpcTimeoutError) as exc:
                self._finished(chosen, breaker, True, now)
                self._unanswered(view, chosen.key, exc)
                # It was sent, and may have run: only an idempotent call goes elsewhere, and only
                # if it can (time left, another provider): a retry that cannot be sent is neither
                # counted nor paid for, and the caller gets this error, the real one.
                later = time.monotonic()
                if policy.mode == "failover" and failovers < policy.retries and deadline > later \
                        and self._can_choose(view, call, tried, later) \
                        and self.budget.try_withdraw(later):
                    failovers += 1
                    self.stats["retries"] += 1
                    continue
                raise
            except TransportError as exc:
                self._finished(chosen, breaker, True, now)
                self._unanswered(view, chosen.key, exc)
                log.info("%s unreachable (%s): trying another provider", chosen.key, exc)
                self.stats["redirects"] += 1
                continue  # no connection: nothing was sent
            except GeneratorExit:  # the caller stopped waiting: the attempt says nothing
                chosen.finished(None)
                if breaker is not None:
                    breaker.release(now)
                raise
            if frame.status == Status.UNAVAILABLE:
                chosen.finished(time.monotonic() - now)
                if breaker is not None:
                    breaker.release(now)
                self.stats["redirects"] += 1
                continue  # refused without being run (going away, or overloaded)
            # An answer, even an exception the remote method raised, is a success for the
            # breaker and the outlier detector: the provider works.
            self._finished(chosen, breaker, False, now, measured=measured)
            if self.outliers is not None:
                self.outliers.answered(chosen.key, time.monotonic())
            return frame

    async def _attempts(self, call: Call, policy: CallPolicy) -> Any:
        """Make the attempts :meth:`_plan` decides, on the client's loop."""
        deadline = time.monotonic() + call.timeout
        view = await self.view(call.spec.address)
        request = self.request_frame(call.spec, call.method, call.args, dict(call.kwargs),
                                     call.serializer)
        plan = self._plan(view, call, policy, deadline)
        outcome: tuple[Frame, bool] | TransportError | None = None
        try:
            while True:
                step = self._resume(plan, outcome)
                # A call that must open the connection first takes a handshake longer (a TLS
                # one, several): its time would make the provider look slow to p2c for a while.
                measured = self.endpoints[step.key].usable
                try:
                    outcome = (await self._send_to(view, step.key, request, step.timeout,
                                                   call.method), measured)
                except TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return self.read_outcome(done.value, call.serializer)
        finally:
            with self.state_lock:
                plan.close()  # if it did not end (cancelled): it gives back its attempt

    def _resume(self, plan: Generator[Step, tuple[Frame, bool], Frame],
                outcome: tuple[Frame, bool] | TransportError | None) -> Step:
        """The plan's next step, under :attr:`state_lock`: its first (``outcome`` None), or the
        one after an attempt's answer or error. Raises StopIteration with the answering frame
        once the call is answered."""
        with self.state_lock:
            if outcome is None:
                return next(plan)
            if isinstance(outcome, TransportError):
                return plan.throw(outcome)
            return plan.send(outcome)

    async def _forking(self, call: Call, policy: CallPolicy) -> Any:
        """Send the call to ``policy.forks`` providers at once; the first answer wins."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        view = await self.view(call.spec.address)
        request = self.request_frame(call.spec, call.method, call.args, dict(call.kwargs),
                                     call.serializer)
        chosen: list[Candidate] = []
        with self.state_lock:
            try:
                while len(chosen) < policy.forks:
                    chosen.append(self._choose(view, call, {c.key for c in chosen}, now))
            except NoProviderError:
                if not chosen:
                    raise
            self.stats["forks"] += len(chosen) - 1
            for candidate in chosen:
                candidate.started()

        async def one(candidate: Candidate) -> Frame:
            try:
                frame = await self._send_to(view, candidate.key, request, call.timeout,
                                            call.method)
            except TransportError as exc:
                with self.state_lock:
                    candidate.finished(time.monotonic() - now)
                    self._unanswered(view, candidate.key, exc)
                raise
            except asyncio.CancelledError:  # another provider answered first
                with self.state_lock:
                    candidate.finished(None)
                raise
            with self.state_lock:
                candidate.finished(time.monotonic() - now)
                if self.outliers is not None:
                    self.outliers.answered(candidate.key, time.monotonic())
            return frame

        tasks = [loop.create_task(one(c)) for c in chosen]
        try:
            error: BaseException | None = None
            for next_done in asyncio.as_completed(tasks):
                try:
                    frame = await next_done
                except TransportError as exc:
                    error = exc
                    continue
                return self.read_outcome(frame, call.serializer)
            assert error is not None
            raise error
        finally:
            for task in tasks:
                task.cancel()

    async def _send_to(self, view: View, key: str, request: Frame, timeout: float,
                       method: str) -> Frame:
        """Send ``request`` to one provider and wait up to ``timeout`` for its answer. A provider
        that understands them (v3.2) gets the time left with the request, and a CANCEL when the
        caller stops waiting: its deadline passed, or the call was cancelled (a forked call
        that another provider answered first). Every attempt is an event for
        ``attempt_listeners`` (v3.3's metrics listen)."""
        features = self._features(view, key)
        endpoint = self.endpoints[key]
        sent = deadline.timed(request, timeout) if "deadline" in features else request
        started = time.perf_counter()
        error: str | None = None
        try:
            return await endpoint.exchange(sent, timeout)
        except (RpcTimeoutError, asyncio.CancelledError) as exc:
            error = type(exc).__name__
            conn = endpoint.connection
            if "cancel" in features and conn is not None and conn.transport is not None:
                conn.write(deadline.cancel_frame(request.request_id), now=True)
            raise
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self._attempted(view.api_address, method, key, started, error)

    @staticmethod
    def _features(view: View, key: str) -> tuple[str, ...]:
        info = view.providers.get(key)
        return info.features if info is not None else ()

    def _attempted(self, api: str, method: str, key: str, started: float,
                   error: str | None) -> None:
        if self.attempt_listeners:
            event = Attempt(api, method, key, time.perf_counter() - started, error)
            with self.state_lock:
                for listener in self.attempt_listeners:
                    listener(event)

    # -- blocking calls: the attempts in the caller's thread -------------------------------------

    def _blocking_call(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                       kwargs: dict[str, Any], serializer: Serializer,
                       timeout: float | None) -> Any:
        """A blocking proxy's call, made in the calling thread as v2.1's direct route makes it
        (:mod:`stages.v2_1.blocking`): :meth:`_plan` decides each attempt under
        :attr:`state_lock`, with the state the loop's calls use, and each attempt is sent on a
        connection to its provider that the thread owns meanwhile, one pool per provider.

        The hand-over to the loop's thread stays for what needs the loop: the interface's first
        call (the registry is read and watched there), forking calls, a client with
        interceptors, and an attempt that finds its provider's pool full, or must use TLS or a
        token (:meth:`_blocking_exchange`)."""
        view = self.views.get(spec.address)
        if view is None or self.interceptors or not self.config.direct_connections \
                or self._on_loop_thread():
            return self._loop().run(self.invoke(spec, method, args, kwargs, serializer, timeout))
        call = Call(spec, method, args, kwargs, serializer,
                    self._timeout(self._settings_timeout(spec.address, method, timeout)))
        policy = self.policy_for(call)
        if policy.mode == "forking":
            return self._loop().run(self.invoke(spec, method, args, kwargs, serializer, timeout))
        with _Counted(self, call):
            if policy.force_fallback:
                return self._fallback(call, policy, "forced fallbacks")
            try:
                return self._blocking_attempts(view, call, policy)
            except TransportError as exc:
                return self._gave_up(call, policy, exc)

    def _blocking_attempts(self, view: View, call: Call, policy: CallPolicy) -> Any:
        """Make the attempts :meth:`_plan` decides, in the calling thread."""
        plan = self._plan(view, call, policy, time.monotonic() + call.timeout)
        request = self.request_frame(call.spec, call.method, call.args, dict(call.kwargs),
                                     call.serializer)
        outcome: tuple[Frame, bool] | TransportError | None = None
        try:
            while True:
                step = self._resume(plan, outcome)
                try:
                    outcome = self._blocking_exchange(view, step, request, call.method)
                except TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return self.read_outcome(done.value, call.serializer)
        finally:
            with self.state_lock:
                plan.close()  # if it did not end (cancelled): it gives back its attempt

    def _blocking_exchange(self, view: View, step: Step, request: Frame,
                           method: str) -> tuple[Frame, bool]:
        """One attempt on a direct connection to ``step.key``; on the loop's connection when
        the pool is full, when it cannot open one (the loop's endpoint then reports the error
        and backs off, which takes the provider out of the candidates), or for TLS or a token.
        Returns the answer, and whether its time measures the provider."""
        endpoint = self.endpoints[step.key]
        pool = None
        # Checked at every attempt: a provider may come back with a token.
        if endpoint.ssl is None and endpoint.hello is None:
            pool = self.direct_pools.get(step.key)
            if pool is None:
                pool = self.direct_pools.setdefault(step.key, DirectPool(
                    functools.partial(self._direct_to, endpoint),
                    self.config.direct_connections))
        try:
            conn = pool.borrow() if pool is not None else None
        except OSError:
            conn = None
        if pool is None or conn is None:
            measured = endpoint.usable
            return self._loop().run(self._send_to(view, step.key, request, step.timeout,
                                                  method)), measured
        measured = conn.calls > 0
        sent = deadline.timed(request, step.timeout) if "deadline" in self._features(
            view, step.key) else request
        started = time.perf_counter()
        error: str | None = None
        try:
            return conn.call(sent, step.timeout), measured
        except Exception as exc:  # a timed-out connection is closed: the provider cancels
            error = type(exc).__name__
            raise
        finally:
            pool.give_back(conn)
            self._attempted(view.api_address, method, step.key, started, error)

    def _direct_to(self, endpoint: Endpoint) -> DirectConnection:
        config = self.config
        return DirectConnection(endpoint.address, config.max_frame_size, config.connect_timeout,
                                endpoint.heartbeat_interval, config.idle)

    def _choose(self, view: View, call: Call, tried: set[str], now: float) -> Candidate:
        """The balancer's choice among the providers that can take the call now."""
        candidates = self._candidates(view, call, tried, now)
        # An ejected provider (see outlier) and weight 0 take a provider out of rotation,
        # whatever the strategy, unless no other is left to take the call.
        if self.outliers is not None and (ejected := self.outliers.ejected_keys(now)):
            candidates = [c for c in candidates if c.key not in ejected] or candidates
        weighted = [c for c in candidates if c.weight > 0]
        balancer = self._balancers.get(view.api_address, self.balancer)
        return balancer.pick(weighted or candidates, _arguments(call))

    def _candidates(self, view: View, call: Call, tried: set[str], now: float) -> list[Candidate]:
        """The providers that can take the call now (not tried yet, reachable, switched on,
        circuit not open); raises if there is none."""
        candidates = []
        open_circuits = 0
        settings = self.settings.get(view.api_address)
        switched = settings.providers if settings is not None else {}
        for key, candidate in view.candidates.items():
            if key in tried or key not in self.endpoints or not self.endpoints[key].accepting(now):
                continue
            if key in switched and not switched[key].enabled:
                continue  # taken out of rotation by the config center
            breaker = self.breakers.get((key, call.method))
            if breaker is not None and not breaker.permits(now):
                open_circuits += 1
                continue
            candidates.append(candidate)
        if not candidates:
            if open_circuits:
                raise CircuitOpenError(f"{call.method}(): the circuit of every provider that "
                                       f"could take it is open ({open_circuits})")
            raise NoProviderError(self._no_provider(view, tried))
        return candidates

    def _finished(self, chosen: Candidate, breaker: CircuitBreaker | None, failed: bool,
                  started: float, *, measured: bool = True) -> None:
        now = time.monotonic()
        chosen.finished(now - started if measured else None)
        if breaker is not None:
            breaker.on_result(failed, now - started, now)

    def _can_choose(self, view: View, call: Call, tried: set[str], now: float) -> bool:
        """Whether a provider not yet tried could take the call now (the balancer is not
        asked: some strategies change their state when they pick)."""
        try:
            self._candidates(view, call, tried, now)
        except NoProviderError:  # CircuitOpenError too
            return False
        return True

    def _unanswered(self, view: View, key: str, exc: BaseException) -> None:
        """A call to ``key`` went unanswered: tell the outlier detector (which may eject it)."""
        if self.outliers is None:
            return
        now = time.monotonic()
        ejection = self.outliers.failed(key, now,
                                        type(exc).__name__, view.candidates)
        if ejection is not None:
            self.stats["ejections"] += 1
            log.info("%s set aside for %.3g s after %s (ejection %d in a row)", key,
                     ejection.until - now, ejection.reason,
                     ejection.times)

    def _no_provider(self, view: View, tried: set[str]) -> str:
        if not view.providers:
            return f"no provider of {view.api_address} is registered in {self._target()}"
        described = []
        for key in sorted(view.providers):
            endpoint = self.endpoints.get(key)
            error = endpoint.last_error if endpoint is not None else None
            described.append(f"{key} ({error})" if error is not None else key)
        return clip(f"no provider of {view.api_address} can take the call now "
                    f"({len(view.providers)} registered; unreachable, backing off, going "
                    f"away or overloaded: {', '.join(described)})", 600)

    async def exchange(self, request: Any, timeout: float | None = None) -> Any:
        raise TypeError("a v3 client sends calls through its balancer: use its proxies")

    # -- life cycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection, then the registry."""
        pools, self.direct_pools = list(self.direct_pools.values()), {}
        for pool in pools:
            pool.close()
        endpoints, self.endpoints = list(self.endpoints.values()), {}
        for endpoint in endpoints:
            await endpoint.aclose()
        if self._registry_started is not None:
            await self.registry.aclose()


class _Counted:
    """Around one call (``with _Counted(client, call):``): counted in ``client.in_flight`` while
    it runs, then handed to ``client.call_listeners`` as a :class:`Called`."""

    __slots__ = ("client", "call", "started")

    def __init__(self, client: Client, call: Call) -> None:
        self.client = client
        self.call = call

    def __enter__(self) -> None:
        with self.client.state_lock:
            self.client.in_flight[self.call.spec.address] += 1
        self.started = time.perf_counter()

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        client, call = self.client, self.call
        event = Called(call.spec.address, call.method, time.perf_counter() - self.started, error)
        with client.state_lock:
            client.in_flight[event.api] -= 1
            for listener in client.call_listeners:
                listener(event)


def _report_done(task: asyncio.Task[None]) -> None:
    # Only for operators: a failure to report stops nothing.
    if not task.cancelled() and task.exception() is not None:
        log.info("could not report the settings version: %s", task.exception())


def _arguments(call: Call) -> tuple[Any, ...]:
    """The call's arguments by position, keyword arguments included (``get_user(user_id=7)``
    and ``get_user(7)`` must hash alike for consistent hashing)."""
    if not call.kwargs:
        return call.args
    method = call.spec.methods[call.method]
    return tuple(method.signature.bind(*call.args, **call.kwargs).arguments.values())
