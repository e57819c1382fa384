"""A small stub package for v2.1's demo: methods that take time.

``TimerApi`` declares two methods that wait, as plain methods, like every interface method; the
provider implements them in the two ways a v2.1 server runs without holding up other calls:

* ``sleep`` is a coroutine (``async def``): the server runs it as its own task on the event loop.
  That is how one slow call shares a connection with fast ones.
* ``block`` is a plain method that blocks its thread (``time.sleep``), as a call into a library
  without asyncio would: the server runs it in its thread pool, so the event loop, and every
  other client, carries on meanwhile.

Both check their argument before they wait. The duration comes off the network and ends up as a
timer: a negative one is nonsense, an hour-long one holds a call slot for an hour, and an
infinite or NaN one reaches the event loop's heap of timers, which NaN (neither smaller nor
larger than anything) leaves out of order for every other timer of the server.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Final

from stages.v1_0.errors import clip_repr
from stages.v2_0.api import rpc_api
from stages.v2_0.user_stub import NAMESPACE

__all__ = ["TimerApi", "TimerImpl", "MAX_SECONDS", "check_duration"]

#: The longest wait a demo method accepts, in seconds.
MAX_SECONDS: Final = 60.0


def check_duration(seconds: object) -> float:
    """``seconds`` as a float, if it is a duration a demo method may wait.

    Raises:
        TypeError: not a number (a bool is not a duration either).
        ValueError: negative, longer than :data:`MAX_SECONDS`, infinite, or NaN.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, got {clip_repr(seconds)}")
    # NaN fails every comparison, and infinity the upper bound: both are refused here.
    if not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be from 0 to {MAX_SECONDS:g}, got {clip_repr(seconds)}")
    return float(seconds)


@rpc_api(namespace=NAMESPACE)
class TimerApi(abc.ABC):
    @abc.abstractmethod
    def sleep(self, seconds: float) -> float:
        """Wait ``seconds``, then return the server's monotonic clock."""

    @abc.abstractmethod
    def block(self, seconds: float) -> float:
        """Block a thread for ``seconds``, then return the server's monotonic clock."""


class TimerImpl(TimerApi):
    """The provider's implementation: one coroutine, one blocking method."""

    async def sleep(self, seconds: float) -> float:  # type: ignore[override]
        await asyncio.sleep(check_duration(seconds))
        return time.monotonic()

    def block(self, seconds: float) -> float:
        time.sleep(check_duration(seconds))
        return time.monotonic()
