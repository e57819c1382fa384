"""Run an asyncio server on its own event loop in a background thread.

For blocking code (tests of blocking proxies, notebook cells) that needs a server in the same
process: the server keeps serving while the calling thread blocks on a call. Benchmarks should
prefer :class:`~stages.harness.process.ServerProcess`, which gives the server its own core.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from stages.harness.lifecycle import Service

__all__ = ["BackgroundServer", "AsyncServer"]


class AsyncServer(Protocol):
    """What :class:`BackgroundServer` needs of a server."""

    @property
    def address(self) -> tuple[str, int]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=AsyncServer)


class BackgroundServer(Generic[S], Service):
    """A server built and run on a private event loop in a daemon thread.

    Usage::

        with BackgroundServer(lambda: new_server()) as bg:
            client = Client(*bg.address)

    Args:
        factory: builds the server; called on the background loop, so the server belongs to it.
        startup_timeout: seconds to wait for the server to start.
    """

    def __init__(self, factory: Callable[[], S], *, startup_timeout: float = 30.0) -> None:
        self._factory = factory
        self._timeout = startup_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-server-loop",
                                        daemon=True)
        self.server: S | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None, "not started"
        return self.server.address

    def start(self) -> BackgroundServer[S]:
        self._thread.start()

        async def build() -> S:
            server = self._factory()
            await server.start()
            return server

        self.server = self.run(build(), timeout=self._timeout)
        return self

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a plain function on the server's loop (to read its state safely)."""

        async def wrapper() -> Any:
            return fn()

        return self.run(wrapper(), timeout=self._timeout)

    def stop(self) -> None:
        """Close the server, stop the loop and join the thread; idempotent."""
        if not self._thread.is_alive():
            return
        if self.server is not None:
            self.run(self.server.aclose(), timeout=self._timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self._timeout)
        self.loop.close()
