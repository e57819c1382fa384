"""The exception tree of v3.x: v2.1's tree, plus what a registry adds::

    RpcError
    ├── TransportError
    │   └── NoProviderError       no provider of the interface can take the call now
    │       └── CircuitOpenError  ... because every provider's circuit breaker is open
    └── RegistryError             the registry cannot be reached, or holds something invalid
        ├── RegistryUnavailable   ZooKeeper did not answer in time (at start, or for too long)
        └── RegistryNotAllowed    a node is protected (an ACL) by credentials this side lacks

A registry entry that fails validation (bad JSON, a port out of range, a field of the wrong type)
is not an exception for the caller: the entry is skipped and logged, and the other providers of
the interface are used. One bad entry must never take a whole interface down.
"""

from __future__ import annotations

from stages.v2_1.errors import *  # noqa: F403  (v2.1's tree, unchanged)
from stages.v2_1.errors import RpcError, TransportError
from stages.v2_1.errors import __all__ as _earlier

__all__ = [*_earlier, "NoProviderError", "CircuitOpenError", "RegistryError",
           "RegistryUnavailable", "RegistryNotAllowed"]


class NoProviderError(TransportError):
    """No provider of the interface can take the call: none is registered, or every one is
    unreachable or backing off. Nothing was sent."""


class CircuitOpenError(NoProviderError):
    """Every provider that could take the call has its circuit breaker open for this method:
    the call was refused at once, without being sent (see :mod:`stages.v3_x.breaker`)."""


class RegistryError(RpcError):
    """The registry cannot be used: unreachable, or it refused an operation."""


class RegistryUnavailable(RegistryError):
    """ZooKeeper did not answer within the time allowed."""


class RegistryNotAllowed(RegistryError):
    """ZooKeeper refused an operation: the node is protected (an ACL) and this registry lacks the
    credentials it was protected with. Not a passing failure: trying again changes nothing."""
