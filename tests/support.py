"""Helpers shared by the tests: bounded async scenarios, waiting on conditions, stage commands.

Tests never sleep and hope: they wait for a condition, with a deadline, and fail clearly when it
does not come.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    """Run an async scenario on a fresh event loop; fail (do not hang) past ``timeout``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await scenario()

    asyncio.run(bounded())


async def until(predicate: Callable[[], bool], timeout: float = 5.0,
                what: str = "condition") -> None:
    """Poll ``predicate`` without blocking the loop until it holds; AssertionError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """:func:`until` for plain threads; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() > start + timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - start


def run_stage(stage: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m stages.<stage> <args>`` as a user runs it; its output captured."""
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], capture_output=True,
                          text=True, timeout=timeout)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
