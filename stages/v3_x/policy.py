"""What a consumer does when a call fails (v3.2): retry elsewhere, fail fast, or fall back.

v2.1 posed the question: when the server a client talks to stops answering, retry or let it
crash? With several providers (v3.0) there is somewhere else to go, and the answer becomes a
policy, chosen per API and, where it matters, per method, as Dubbo's cluster modes are:

=============  ===============================================================================
mode           on a failure
=============  ===============================================================================
``failfast``   raise at once (the default: right for anything not known to be idempotent)
``failover``   try another provider, up to ``retries`` more times, **only if the method is
               idempotent**: a call that was sent may have run, and running ``transfer_money``
               twice is worse than failing it once. Retries also draw on the client's retry
               budget, so a failing cluster is not hammered by a retry storm
``failsafe``   log, and return ``default`` (for calls whose answer is nice to have: a
               recommendation, an audit record)
``forking``    send the call to ``forks`` providers at once and take the first answer (trading
               load for latency; only for idempotent methods)
=============  ===============================================================================

Whatever the mode, a call that was certainly **not run** (no connection could be opened, or the
provider refused it while going away) goes to another provider: that is always safe.

**Degradation.** A ``fallback`` (any callable taking the method's arguments: a function, or a
bound method of a local mock implementation of the interface) answers instead when the call
fails on transport, times out, or finds every provider's circuit open. Exceptions the remote
method itself raised (``UserNotFound``) are answers, not failures: they reach the caller as they
are. ``force_fallback`` degrades the method outright: no remote call at all (v3.3's config
center flips it at run time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from stages.v3_x.errors import ConfigError

__all__ = ["CallPolicy", "MODES", "DEFAULT_POLICY"]

MODES = ("failfast", "failover", "failsafe", "forking")


@dataclass(frozen=True, kw_only=True)
class CallPolicy:
    """How calls of one API (or one of its methods) are made.

    Attributes:
        mode: ``failfast``, ``failover``, ``failsafe`` or ``forking``.
        idempotent: the method may safely run twice; required by ``failover`` and ``forking``.
        retries: further providers ``failover`` tries after the first (at most 4: 5 attempts).
        forks: providers ``forking`` sends each call to.
        fallback: answers instead of the remote method when the call fails (see above).
        default: what ``failsafe`` returns when the call fails and there is no fallback.
        force_fallback: answer with ``fallback`` without calling any provider.
    """

    mode: Literal["failfast", "failover", "failsafe", "forking"] = "failfast"
    idempotent: bool = False
    retries: int = 2
    forks: int = 2
    fallback: Callable[..., Any] | None = None
    default: Any = None
    force_fallback: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"CallPolicy.mode must be one of {', '.join(MODES)}, got "
                              f"{self.mode!r}")
        if self.mode in ("failover", "forking") and not self.idempotent:
            raise ConfigError(f"{self.mode} sends a call more than once: it needs "
                              "idempotent=True (a call that was sent may have run)")
        if type(self.retries) is not int or not 0 <= self.retries <= 4:
            raise ConfigError(f"CallPolicy.retries must be an int from 0 to 4, got "
                              f"{self.retries!r}")
        if type(self.forks) is not int or not 2 <= self.forks <= 5:
            raise ConfigError(f"CallPolicy.forks must be an int from 2 to 5, got {self.forks!r}")
        if self.force_fallback and self.fallback is None:
            raise ConfigError("force_fallback needs a fallback")


DEFAULT_POLICY = CallPolicy()
