"""v3.x: governance on ZooKeeper. 3.0 registration and discovery; 3.1 client-side balancing;
3.2 fault tolerance: call policies, circuit breakers, a retry budget, outlier detection; 3.3 a
config center with hot update, monitoring, and who may call and register.

What changed since v2.1, module by module:

* :mod:`~stages.v3_x.registry` (new): providers' entries in ZooKeeper, consumers' watched views;
  a static list for direct connection;
* :mod:`~stages.v3_x.balancer` (new): random, weighted, smooth round robin, least active,
  consistent hashing, and power of two choices over peak-EWMA latency;
* :mod:`~stages.v3_x.server`: v2.1's server, registered while it serves, withdrawn before it
  drains;
* :mod:`~stages.v3_x.client`: v2.1's client with one endpoint per provider and a balancer
  choosing among them;
* :mod:`~stages.v3_x.policy`, :mod:`~stages.v3_x.breaker`, :mod:`~stages.v3_x.retry`,
  :mod:`~stages.v3_x.outlier` (new, 3.2): failover, failfast, failsafe and forking; fallbacks;
  circuit breakers; the retry budget; providers that leave calls unanswered set aside;
* :mod:`~stages.v3_x.deadline` (new, 3.2): the caller's time left travels with each request
  (frame type 6) and a caller that stops waiting says so (7, CANCEL): the provider does not
  start, or stops, work nobody waits for;
* :mod:`~stages.v3_x.incident` (new, 3.2): incidents staged on a provider on command (fail,
  slow, freeze), to watch the above at work; the server's per-API cap answers "overloaded";
* :mod:`~stages.v3_x.settings` (new, 3.3): the config center's settings per API and method
  (timeout, mode, retries, forced degradation, balancer, provider weights and on/off), checked
  whole and applied live by consumers (and reported by providers) watching ZooKeeper;
* :mod:`~stages.v3_x.metrics` (new, 3.3): consumers' and providers' calls, errors by kind,
  latency, attempts per provider, breaker states, ejections, connections, settings versions,
  collected from their events, in the Prometheus text format;
* :mod:`~stages.v3_x.security` (new, 3.3): TLS (mutual if asked) on every connection, and a
  provider's token that only consumers who read the registry can show; the registry's own
  protection, ZooKeeper digest ACLs, is in :mod:`~stages.v3_x.registry`;
* :mod:`~stages.v3_x.demo`, :mod:`~stages.v3_x.costs` (new, 3.3): the whole story in one command,
  and what TLS, the token and metrics cost;
* :mod:`~stages.v3_x.config`, :mod:`~stages.v3_x.errors`: v2.1's, plus weight, balancer, breaker
  settings, and the registry's and the breaker's errors.

Unchanged and imported from v2.1: the protocol, the connections (``Endpoint``), heartbeats,
proxies, the interceptor chain, serializers, interfaces.
"""

from stages.v2_1 import PROTOCOL_VERSION, Call, Interceptor  # unchanged since v2.1
from stages.v3_x.balancer import (
    STRATEGIES,
    Balancer,
    Candidate,
    ConsistentHashBalancer,
    LeastActiveBalancer,
    P2CBalancer,
    PeakEwma,
    RandomBalancer,
    RoundRobinBalancer,
    WeightedRandomBalancer,
    make_balancer,
)
from stages.v3_x.breaker import BreakerConfig, CircuitBreaker, State, Transition
from stages.v3_x.client import Client, View
from stages.v3_x.config import DEFAULT_BALANCER, ClientConfig, ServerConfig
from stages.v3_x.errors import (
    CircuitOpenError,
    ConnectionClosedError,
    NoProviderError,
    RegistryError,
    RegistryNotAllowed,
    RegistryUnavailable,
    RemoteError,
    RpcError,
    RpcTimeoutError,
    TransportError,
)
from stages.v3_x.outlier import Ejection, OutlierConfig, OutlierDetector
from stages.v3_x.policy import CallPolicy
from stages.v3_x.registry import ProviderInfo, Registry, StaticRegistry, ZooKeeperRegistry
from stages.v3_x.retry import RetryBudget
from stages.v3_x.security import TlsConfig
from stages.v3_x.server import Server
from stages.v3_x.settings import ApiSettings, CallSettings, ProviderSettings

STAGE = "3.3"

__all__ = [
    "STAGE", "PROTOCOL_VERSION", "Call", "Interceptor",
    "Balancer", "Candidate", "PeakEwma", "RandomBalancer", "WeightedRandomBalancer",
    "RoundRobinBalancer", "LeastActiveBalancer", "ConsistentHashBalancer", "P2CBalancer",
    "STRATEGIES", "make_balancer", "DEFAULT_BALANCER",
    "Client", "View", "ClientConfig", "ServerConfig", "Server",
    "ProviderInfo", "Registry", "StaticRegistry", "ZooKeeperRegistry",
    "RpcError", "TransportError", "ConnectionClosedError", "RpcTimeoutError", "RemoteError",
    "NoProviderError", "RegistryError", "RegistryUnavailable", "RegistryNotAllowed",
    "CircuitOpenError",
    "CallPolicy", "BreakerConfig", "CircuitBreaker", "State", "Transition", "RetryBudget",
    "OutlierConfig", "OutlierDetector", "Ejection",
    "ApiSettings", "CallSettings", "ProviderSettings", "TlsConfig",
]
