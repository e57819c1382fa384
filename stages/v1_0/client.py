"""The v1.0 client: connect, send one request frame, read one response frame, close.

One connection per call is the simplest thing that works, and it is what v1.0 measures: every
call pays a TCP handshake and a teardown. v2.1 removes that cost with long-lived connections.

Socket errors are translated into the RPC error tree here, at the edge where I/O happens, and
nowhere else (see :func:`map_os_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator

from stages.v1_0.config import ClientConfig
from stages.v1_0.errors import (
    ConnectionClosedError,
    RemoteError,
    RemoteProtocolError,
    RpcTimeoutError,
    Status,
    TransportError,
)
from stages.v1_0.messages import Request, decode_result, encode_request
from stages.v1_0.protocol import NEED_DATA, Frame, FrameCodec, FrameType

__all__ = ["Client", "map_os_errors", "raise_for_status"]


@contextlib.contextmanager
def map_os_errors(address: tuple[str, int]) -> Iterator[None]:
    """Translate socket-level exceptions into :class:`TransportError` subclasses."""
    where = f"{address[0]}:{address[1]}"
    try:
        yield
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
        raise ConnectionClosedError(f"connection to {where} closed by peer: {exc}") from exc
    except ConnectionRefusedError as exc:
        raise TransportError(f"cannot connect to {where}: connection refused") from exc
    except OSError as exc:
        raise TransportError(f"network error talking to {where}: {exc}") from exc


def raise_for_status(frame: Frame) -> None:
    """Raise :class:`RemoteError` if a response frame carries an error status."""
    if frame.status != Status.OK:
        try:
            status = Status(frame.status)
        except ValueError:
            status = Status.INTERNAL
        raise RemoteError(status, frame.body.decode("utf-8", "replace"))


class Client:
    """Calls a v1.0 server at ``host:port``.

    Usage::

        client = Client("127.0.0.1", 9000)
        user = await client.call("userService", "getUser", id=123456)
        # {'id': '123456', 'name': 'Alan Turing', ...}
    """

    def __init__(self, host: str, port: int, config: ClientConfig | None = None) -> None:
        self.address = (host, port)
        self.config = config or ClientConfig()
        self._ids = itertools.count()

    async def call(self, service: str, method: str, **params: object) -> dict[str, str]:
        """Call ``service:method`` with ``params`` and return the result's fields.

        Raises:
            RemoteError: the server answered with an error (unknown method, bad parameters,
                the method raised...).
            RpcTimeoutError: no answer within ``config.timeout``.
            TransportError: the server could not be reached, or closed the connection.
            RemoteProtocolError: the answer broke the protocol.
        """
        body = encode_request(Request(service, method, {k: str(v) for k, v in params.items()}))
        frame = await self.exchange(Frame(FrameType.REQUEST, self.next_request_id(), body))
        raise_for_status(frame)
        return decode_result(frame.body)

    def next_request_id(self) -> int:
        """1, 2, ... 2**32 - 1, then 1 again: 0 is kept for the server's answers to frames it
        could not read (their request id is unknown)."""
        return next(self._ids) % 0xFFFFFFFF + 1

    async def exchange(self, request: Frame, timeout: float | None = None) -> Frame:
        """Send one frame on a new connection and return the frame that answers it.

        Args:
            timeout: seconds for the whole exchange; ``config.timeout`` when None.
        """
        timeout = self.config.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(request)
        except TimeoutError:
            raise RpcTimeoutError(
                f"no answer from {self.address[0]}:{self.address[1]} within {timeout} s"
            ) from None

    async def _exchange(self, request: Frame) -> Frame:
        codec = FrameCodec(max_frame_size=self.config.max_frame_size)
        with map_os_errors(self.address):
            reader, writer = await asyncio.open_connection(*self.address)
            try:
                writer.write(codec.encode(request))
                while (frame := codec.next_frame()) is NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        codec.feed_eof()
                        if codec.buffered == 0:
                            raise ConnectionClosedError(
                                f"{self.address[0]}:{self.address[1]} closed the connection "
                                "without answering"
                            )
                    else:
                        codec.feed(data)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        if frame.type != FrameType.RESPONSE or frame.request_id not in (request.request_id, 0):
            raise RemoteProtocolError(
                f"expected the RESPONSE to request {request.request_id}, got type {frame.type} "
                f"for request {frame.request_id}"
            )
        return frame
