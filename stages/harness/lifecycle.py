"""The ``with`` and ``async with`` protocol of the harness's start/stop objects, written once.

Every piece of the bench (a ZooKeeper, a server process, a proxy, a peer) starts and stops the
same way: entering the block starts it, leaving the block stops it, whatever happened inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

__all__ = ["Service", "AsyncService", "AsyncClosing", "tail_of"]


def tail_of(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a service's log file, or a note saying it cannot be read (for
    the error raised when a service does not start)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"({path.name}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


class Service:
    """``with obj:`` runs ``obj.start()`` on entry and ``obj.stop()`` on exit."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AsyncClosing:
    """``async with obj:`` runs ``await obj.aclose()`` on exit (entering does nothing)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncService(AsyncClosing):
    """``async with obj:`` runs ``await obj.start()`` on entry and ``await obj.aclose()`` on exit."""

    async def start(self) -> Any:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self
