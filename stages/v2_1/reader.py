"""Reading into a buffer the event loop's thread keeps, instead of a new one per read.

With a plain ``asyncio.Protocol``, every read hands the protocol a new ``bytes`` object: the
transport asks the socket for up to 256 KiB, so each read allocates 256 KiB and then shrinks it
to what arrived, often a hundred bytes. glibc serves an allocation that large with ``mmap``, so a
read can cost three more system calls than the ``recv`` itself: ``mmap``, ``mremap`` and
``munmap`` (``strace -c`` on a fresh client process shows one of each per answer). It stops once
the process has freed some large allocation whole, because glibc then raises its threshold; so
whether a plain read pays depends on what the process did before. A buffered read never pays.

``asyncio.BufferedProtocol`` turns this around: the transport asks the protocol for a buffer and
receives into it (``recv_into``). The buffer here is one per thread, that is one per event loop,
reused by every connection of that loop, and :meth:`OwnBufferReader.buffer_updated` copies out
just the bytes that arrived before anything else can run, so connections never see each other's
bytes. One buffer per loop rather than per connection, because a server with 10,000 idle
clients should not hold 10,000 read buffers (Netty pools its buffers for the same reason).
"""

from __future__ import annotations

import threading

__all__ = ["OwnBufferReader"]

_buffers = threading.local()


class OwnBufferReader:
    """Mixin for an ``asyncio.BufferedProtocol`` that handles its bytes in ``data_received``."""

    #: Bytes asked of the socket per read, as much as a plain asyncio transport asks for.
    READ_SIZE = 256 * 1024

    def get_buffer(self, sizehint: int) -> memoryview:
        """The loop thread's read buffer (made on first use)."""
        buffer: memoryview | None = getattr(_buffers, "view", None)
        if buffer is None:
            buffer = _buffers.view = memoryview(bytearray(self.READ_SIZE))
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived at the start of the buffer: hand a copy of them on."""
        self.data_received(_buffers.view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError
