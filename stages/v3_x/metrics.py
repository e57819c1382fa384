"""Monitoring (v3.3): what a consumer does, as metrics a real Prometheus can scrape.

The metrics are collected by *listening* to the events the client already emits, never by
threading counters through the call path: an :class:`~stages.v2_1.client.Interceptor` around
every call (calls, errors by kind, latency, calls in flight), ``attempt_listeners`` (attempts per
provider and their outcome), ``breaker_listeners`` (state changes) and the outlier detector's
listeners (ejections). Attach them to a client with :meth:`ClientMetrics.attach`.

=======================================  ============  =======================================
metric                                   type          labels
=======================================  ============  =======================================
``rpc_client_calls_total``               counter       api, method, outcome
``rpc_client_call_duration_seconds``     histogram     api, method
``rpc_client_calls_in_flight``           gauge         api
``rpc_client_attempts_total``            counter       api, provider, outcome
``rpc_client_breaker_transitions_total`` counter       provider, method, state
``rpc_client_breaker_open``              gauge         provider, method (1 while open)
``rpc_client_ejections_total``           counter       provider
=======================================  ============  =======================================

Names follow Prometheus' conventions (``_total`` for counters, base units: seconds). Every label
value comes from a bounded set: the interfaces and methods the client was built for, the
providers it knows, and a fixed list of outcomes (``ok``, ``remote_error``, ``timeout``,
``connection_closed``, ``unavailable``, ``circuit_open``, ``no_provider``, ``serialization``,
``cancelled``, ``other``): never a request id, an argument or an error message.

``ClientMetrics.serve(port)`` exposes them over HTTP in the Prometheus text format (on
127.0.0.1 unless told otherwise); :meth:`ClientMetrics.snapshot` returns them as a plain dict for
notebooks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from stages.v2_1.client import Call, Proceed
from stages.v3_x.breaker import State, Transition
from stages.v3_x.client import Attempt, Client
from stages.v3_x.errors import (
    CircuitOpenError,
    ConnectionClosedError,
    NoProviderError,
    RemoteError,
    RpcError,
    RpcTimeoutError,
    SerializationError,
    Status,
)
from stages.v3_x.outlier import Ejection

__all__ = ["ClientMetrics", "OUTCOMES", "outcome_of"]

OUTCOMES: Final = ("ok", "remote_error", "timeout", "connection_closed", "unavailable",
                   "circuit_open", "no_provider", "serialization", "cancelled", "other")
#: Latency buckets, in seconds: from 100 µs (a call on loopback) to 10 s (a long deadline).
BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5, 5.0, 10.0)
_ATTEMPT_OUTCOMES: Final = {None: "ok", "RpcTimeoutError": "timeout",
                            "ConnectionClosedError": "connection_closed",
                            "CancelledError": "cancelled"}


def outcome_of(error: BaseException | None) -> str:
    """The outcome label of a call that ended with ``error`` (None: it returned)."""
    if error is None:
        return "ok"
    if isinstance(error, RpcTimeoutError):
        return "timeout"
    if isinstance(error, ConnectionClosedError):
        return "connection_closed"
    if isinstance(error, CircuitOpenError):
        return "circuit_open"
    if isinstance(error, NoProviderError):
        return "no_provider"
    if isinstance(error, RemoteError):
        return "unavailable" if error.status == Status.UNAVAILABLE else "remote_error"
    if isinstance(error, SerializationError):
        return "serialization"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, RpcError):
        return "other"
    return "remote_error"  # an exception the remote method raised, rebuilt here


class ClientMetrics:
    """The metrics of one or more consumers, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter("rpc_client_calls", "Calls made, by outcome",
                             ["api", "method", "outcome"], registry=r)
        self.duration = Histogram("rpc_client_call_duration_seconds",
                                  "Time from a call to its answer or failure, all attempts in",
                                  ["api", "method"], buckets=BUCKETS, registry=r)
        self.in_flight = Gauge("rpc_client_calls_in_flight", "Calls waiting for their answer",
                               ["api"], registry=r)
        self.attempts = Counter("rpc_client_attempts", "Attempts sent to each provider",
                                ["api", "provider", "outcome"], registry=r)
        self.transitions = Counter("rpc_client_breaker_transitions",
                                   "Circuit breaker state changes, by the state entered",
                                   ["provider", "method", "state"], registry=r)
        self.breaker_open = Gauge("rpc_client_breaker_open", "1 while the breaker is open",
                                  ["provider", "method"], registry=r)
        self.ejections = Counter("rpc_client_ejections",
                                 "Providers set aside by outlier detection", ["provider"],
                                 registry=r)

    def attach(self, client: Client) -> Client:
        """Subscribe to a client's events (its interceptor chain gets one more, outermost)."""
        client.add_interceptor(self.intercept)
        client.attempt_listeners.append(self.on_attempt)
        client.breaker_listeners.append(self.on_transition)
        if client.outliers is not None:
            client.outliers.listeners.append(self.on_ejection)
        return client

    # -- the listeners ---------------------------------------------------------------------------

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        api, method = call.spec.address, call.method
        gauge = self.in_flight.labels(api)
        gauge.inc()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await proceed(call)
        except BaseException as exc:
            error = exc
            raise
        finally:
            gauge.dec()
            self.duration.labels(api, method).observe(time.perf_counter() - started)
            self.calls.labels(api, method, outcome_of(error)).inc()

    def on_attempt(self, attempt: Attempt) -> None:
        self.attempts.labels(attempt.api, attempt.provider,
                             _ATTEMPT_OUTCOMES.get(attempt.error, "other")).inc()

    def on_transition(self, event: Transition) -> None:
        provider, _, method = event.name.partition(" ")
        self.transitions.labels(provider, method, event.new.value).inc()
        self.breaker_open.labels(provider, method).set(1 if event.new is State.OPEN else 0)

    def on_ejection(self, event: Ejection) -> None:
        self.ejections.labels(event.key).inc()

    # -- reading them ----------------------------------------------------------------------------

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve ``/metrics`` over HTTP from a daemon thread; returns the address."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return host, server.server_address[1]

    def snapshot(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Every sample, by metric sample name and label values: a plain dict for notebooks."""
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sample.labels.values())] = sample.value
        return out
