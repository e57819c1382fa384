"""Joining small writes: one system call for many frames.

With many calls in flight, a turn of the event loop often produces dozens of frames for the same
connection (requests from dozens of tasks, answers to dozens of calls). Writing each on its own
costs one ``send`` system call per frame, and on loopback each ``send`` also wakes the peer,
which then reads a single frame. Joining the frames written during one turn and sending them at
its end turns dozens of system calls into one, and lets the peer read them in one go.

A lone frame should not wait, though: a single call in flight wants its request on the wire at
once, not one loop turn later. So the owner says, per write, whether it may wait.
"""

from __future__ import annotations

import asyncio

__all__ = ["BatchedWriter"]


class BatchedWriter:
    """Mixin for an ``asyncio.Protocol`` that has ``transport`` and ``_loop`` attributes."""

    transport: asyncio.Transport | None
    _loop: asyncio.AbstractEventLoop
    _batch: list[bytes] | None = None
    #: Frames joined into one write at the most.
    CHUNK = 16

    def write(self, data: bytes, *, now: bool = False) -> None:
        """Send ``data``: at once if ``now`` and nothing is waiting, else at the end of this turn."""
        if self.transport is None:
            return
        if self._batch is None:
            if now:
                self.transport.write(data)
                return
            self._batch = [data]
            self._loop.call_soon(self.flush)
        else:
            batch = self._batch
            batch.append(data)
            if len(batch) >= self.CHUNK:
                # Do not hold a long train back until the end of the turn: the peer can start
                # on the first frames while this side produces the rest.
                self._batch = []
                self.transport.write(b"".join(batch))

    def flush(self) -> None:
        """Send everything batched so far."""
        batch, self._batch = self._batch, None
        if batch and self.transport is not None:
            self.transport.write(b"".join(batch))  # one frame is passed on as it is, uncopied
