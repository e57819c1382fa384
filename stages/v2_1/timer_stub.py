"""A small stub package for v2.1's demo: a method that takes time.

``TimerApi.sleep`` is declared as a plain method, like every interface method; the provider
implements it as a coroutine, which a v2.1 server runs as its own task. That is how one slow call
shares a connection with fast ones without holding them up.
"""

from __future__ import annotations

import abc
import asyncio
import time

from stages.v2_0.api import rpc_api
from stages.v2_0.user_stub import NAMESPACE

__all__ = ["TimerApi", "TimerImpl"]


@rpc_api(namespace=NAMESPACE)
class TimerApi(abc.ABC):
    @abc.abstractmethod
    def sleep(self, seconds: float) -> float:
        """Wait ``seconds``, then return the server's monotonic clock."""


class TimerImpl(TimerApi):
    """The provider's implementation: a coroutine, so waiting holds up nobody."""

    async def sleep(self, seconds: float) -> float:  # type: ignore[override]
        await asyncio.sleep(seconds)
        return time.monotonic()
