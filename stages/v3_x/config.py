"""Configuration of v3.x: v2.1's settings, plus what registration and balancing need."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.v1_0.config import check_count, check_positive
from stages.v2_1 import config as v2_1
from stages.v3_x.balancer import STRATEGIES
from stages.v3_x.breaker import BreakerConfig
from stages.v3_x.errors import ConfigError
from stages.v3_x.outlier import OutlierConfig
from stages.v3_x.security import TlsConfig

__all__ = ["ServerConfig", "ClientConfig", "DEFAULT_BALANCER"]

#: The strategy a consumer uses unless told otherwise (see notebook 05 for the measurements).
DEFAULT_BALANCER = "p2c"


@dataclass(frozen=True, kw_only=True)
class ServerConfig(v2_1.ServerConfig):
    """Server settings of v2.1, plus:

    Attributes:
        weight: the provider's relative share of traffic, published in its registry entry
            (0 to 10000; 0 keeps it registered but out of rotation).
        version: the provider's software version, published in its registry entry.
        deregister_delay: seconds between withdrawing the registry entry and telling clients
            GOAWAY on shutdown: time for consumers' watches to fire, so that they stop
            choosing this provider before it stops taking calls.
        max_calls_per_api: (3.2) calls of one API that may run at once (tasks and thread-pool
            calls; inline methods end before the next call is read). A call past it is
            answered UNAVAILABLE "overloaded" at once, without being run or queued, and a v3
            consumer sends it to another provider. None (the default) for no cap, as Dubbo's
            ``executes``.
        token: (3.3) a token consumers must show, read from this provider's registry entry
            (see :mod:`stages.v3_x.security`): ``"auto"`` for a fresh random one, or the token
            itself; empty (the default) for none.
        tls: (3.3) serve over TLS, mutual TLS if it says so; None (the default) for plain TCP.
    """

    weight: int = 100
    version: str = ""
    deregister_delay: float = 0.5
    max_calls_per_api: int | None = None
    token: str = ""
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.weight) is not int or not 0 <= self.weight <= 10_000:
            raise ConfigError(f"ServerConfig.weight must be an int from 0 to 10000, got "
                              f"{self.weight!r}")
        check_positive(self, "deregister_delay")
        if self.max_calls_per_api is not None:
            check_count(self, "max_calls_per_api")
        if not isinstance(self.token, str) or not _TOKEN.match(self.token):
            raise ConfigError("ServerConfig.token must be 'auto' or at most 64 letters, digits, "
                              "'-' or '_'")
        _check_tls(self)


@dataclass(frozen=True, kw_only=True)
class ClientConfig(v2_1.ClientConfig):
    """Client settings of v2.1, plus:

    Attributes:
        balancer: the load-balancing strategy (see :mod:`stages.v3_x.balancer`).
        breaker: the circuit breakers' settings, one breaker per provider and method
            (see :mod:`stages.v3_x.breaker`); None (the default, as in Dubbo) for none.
        outlier: when a provider that leaves calls unanswered is set aside, and for how long
            (see :mod:`stages.v3_x.outlier`); on by default, as Finagle's failure accrual;
            None for never.
        tls: (3.3) connect to providers over TLS, checking their certificates against its CA
            (and showing this client's certificate, for mutual TLS); None for plain TCP.
    """

    balancer: str = DEFAULT_BALANCER
    breaker: BreakerConfig | None = None
    outlier: OutlierConfig | None = OutlierConfig()
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.breaker is not None and not isinstance(self.breaker, BreakerConfig):
            raise ConfigError(f"ClientConfig.breaker must be a BreakerConfig or None, got "
                              f"{self.breaker!r}")
        if self.outlier is not None and not isinstance(self.outlier, OutlierConfig):
            raise ConfigError(f"ClientConfig.outlier must be an OutlierConfig or None, got "
                              f"{self.outlier!r}")
        _check_tls(self)
        if self.balancer not in STRATEGIES:
            raise ConfigError(f"ClientConfig.balancer: unknown strategy {self.balancer!r} "
                              f"(known: {', '.join(STRATEGIES)})")


_TOKEN = re.compile(r"[A-Za-z0-9_\-]{0,64}\Z")


def _check_tls(config: ServerConfig | ClientConfig) -> None:
    if config.tls is not None and not isinstance(config.tls, TlsConfig):
        raise ConfigError(f"{type(config).__name__}.tls must be a TlsConfig or None, got "
                          f"{config.tls!r}")
