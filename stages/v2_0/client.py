"""The v2.0 client: call an interface, and let a dynamic proxy build the request.

``client.proxy(UserApi)`` returns an object that *is* a ``UserApi`` (an instance of a subclass
made at run time, the way ``java.lang.reflect.Proxy`` makes one), whose every method does the
same thing: check the arguments against the interface's signature, wrap the call in an
:class:`~stages.v2_0.serializers.Invocation`, serialize it, send it in a frame and wait for the
:class:`~stages.v2_0.serializers.Outcome`. The caller writes ``user_api.get_user(123456)`` and
gets a ``User``, or the exception the remote method raised.

Two forms come from the same machinery:

* ``client.proxy(UserApi)``: methods block and return the value. The client runs its own event
  loop in a background thread, so this works from plain scripts and from inside a notebook
  (whose own loop is already running) alike.
* ``client.async_proxy(UserApi)``: methods return awaitables, for asyncio code.

The transport is v1.0's, unchanged: one new connection per call (``Client.exchange``). That cost
is measured here and removed in v2.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from stages.v1_0 import client as v1_0
from stages.v1_0.protocol import Frame, FrameType
from stages.v2_0.api import ApiSpec, MethodSpec, api_spec
from stages.v2_0.config import ClientConfig
from stages.v2_0.errors import (
    ApiDefinitionError,
    RemoteError,
    RemoteException,
    RemoteProtocolError,
    Status,
)
from stages.v2_0.limits import DecodeLimits
from stages.v2_0.serializers import (
    ErrorInfo,
    Invocation,
    Serializer,
    TypeRegistry,
    serializer_by_name,
)

if TYPE_CHECKING:
    # Why TypeForm[T] and not type[T] for proxy(): interfaces are abstract classes, and mypy
    # refuses an abstract class where type[T] is expected ([type-abstract]), since type[T]
    # promises a class it may instantiate. A proxy never instantiates the interface.
    from typing_extensions import TypeForm

__all__ = ["Client", "rebuild_exception", "make_proxy_class"]

T = TypeVar("T")


def rebuild_exception(info: ErrorInfo, status: Status, registry: TypeRegistry) -> BaseException:
    """The exception to raise on the caller's side for a remote error.

    A built-in exception or one the interface declares comes back as itself, rebuilt from its
    ``args``, with the remote traceback attached as a note. Any other type comes back as a
    :class:`RemoteException` that carries the remote type name, message and traceback. Errors
    of the RPC layer itself (unknown address or method, bad arguments) come back as a
    :class:`RemoteError` with their status.
    """
    if status != Status.INTERNAL:
        return RemoteError(status, info.message)
    cls = registry.exception_class(info.type)
    if cls is not None:
        try:
            exc = cls(*info.args)
        except Exception:  # its constructor does not take its own args back: report as remote
            pass
        else:
            if info.traceback:
                exc.add_note(f"Raised by the remote method. Remote traceback:\n{info.traceback}")
            return exc
    return RemoteException(info.type, info.message, info.traceback or None)


class _LoopThread:
    """An event loop running in a daemon thread, for the blocking proxies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="rpc-client-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking proxy cannot be called from the client's own event "
                               "loop: use async_proxy() there")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Client(v1_0.Client):
    """Calls APIs served by a v2.0 server at ``host:port``.

    Usage::

        with Client("127.0.0.1", port) as client:
            user_api = client.proxy(UserApi)
            user = user_api.get_user(123456)

    Args:
        host, port: the server's address (v2.0 has no registry yet).
        config: timeout, frame limit and default serializer.
    """

    config: ClientConfig

    def __init__(self, host: str, port: int, config: ClientConfig | None = None) -> None:
        super().__init__(host, port, config or ClientConfig())
        self._loop_thread: _LoopThread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def call(self, service: str, method: str, **params: object) -> dict[str, str]:
        """v1.0's request line is gone: v2.0 servers refuse it. Call interfaces through
        :meth:`proxy` or :meth:`async_proxy`."""
        raise ApiDefinitionError("v2.0 calls interfaces: use client.proxy(Interface) or "
                                 "client.async_proxy(Interface)")

    # -- proxies -------------------------------------------------------------------------------

    def proxy(self, interface: TypeForm[T], *, serializer: str | None = None) -> T:
        """A proxy whose methods block until the remote call returns."""
        spec, ser = self._prepare(interface, serializer)

        def call(method: MethodSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return self._loop().run(self.invoke(spec, method.name, args, kwargs, ser))

        # The proxy class is made at run time as a subclass of the interface: it is a T.
        return cast(T, make_proxy_class(spec, asynchronous=False)(
            call, f"{self.address[0]}:{self.address[1]}"))

    def async_proxy(self, interface: type, *, serializer: str | None = None) -> Any:
        """A proxy whose methods return awaitables (``await api.get_user(1)``).

        Its methods have the interface's names and signatures but are coroutines, so it is typed
        as ``Any`` rather than as the (synchronous) interface.
        """
        spec, ser = self._prepare(interface, serializer)

        def call(method: MethodSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return self.invoke(spec, method.name, args, kwargs, ser)

        return make_proxy_class(spec, asynchronous=True)(call, f"{self.address[0]}:{self.address[1]}")

    def _prepare(self, interface: object, serializer: str | None) -> tuple[ApiSpec, Serializer]:
        spec = api_spec(interface)
        cls = serializer_by_name(serializer or self.config.serializer)
        limits = DecodeLimits.for_frame(self.config.max_frame_size)
        return spec, cls(TypeRegistry.of([spec]), limits)

    # -- one call ------------------------------------------------------------------------------

    async def invoke(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], serializer: Serializer,
                     timeout: float | None = None) -> Any:
        """Send one call and return its value, or raise what it raised.

        Args:
            timeout: seconds to wait for the answer; ``config.timeout`` when None.

        Raises:
            SerializationError: an argument cannot be encoded (nothing was sent), or the answer
                cannot be decoded.
            RemoteError, RemoteException, or the remote exception itself: see
                :func:`rebuild_exception`.
            TransportError, RpcTimeoutError: as in v1.0.
        """
        request = self.request_frame(spec, method, args, kwargs, serializer)
        return self.read_outcome(await self.exchange(request, timeout), serializer)

    def request_frame(self, spec: ApiSpec, method: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any], serializer: Serializer) -> Frame:
        """The REQUEST frame of one call (raises SerializationError before anything is sent)."""
        body = serializer.encode_invocation(Invocation(spec.address, method, args, kwargs))
        return Frame(FrameType.REQUEST, self.next_request_id(), body, serializer.serializer_id)

    @staticmethod
    def read_outcome(frame: Frame, serializer: Serializer) -> Any:
        """Turn a response frame into the call's value, or raise its error."""
        if frame.codec == 0:  # plain text: the server could not even read the request
            v1_0.raise_for_status(frame)
            raise RemoteProtocolError("a successful response must use the request's serializer")
        if frame.codec != serializer.serializer_id:
            raise RemoteProtocolError(f"answer in serializer {frame.codec}, asked in "
                                      f"{serializer.serializer_id}")
        outcome = serializer.decode_outcome(frame.body)
        if outcome.error is not None:
            try:
                status = Status(frame.status)
            except ValueError:  # a status this version does not know
                status = Status.INTERNAL
            raise rebuild_exception(outcome.error, status, serializer.registry)
        return outcome.value

    # -- life cycle ----------------------------------------------------------------------------

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed")
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            return self._loop_thread

    def close(self) -> None:
        """Stop the background loop of the blocking proxies (if one was started). Final: a
        blocking call on a closed client raises RuntimeError."""
        with self._lock:
            loop_thread, self._loop_thread = self._loop_thread, None
            self._closed = True
        if loop_thread is not None:
            loop_thread.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def make_proxy_class(spec: ApiSpec, *, asynchronous: bool) -> type:
    """Make, at run time, a subclass of the interface whose methods forward to a ``call``.

    The class is what ``java.lang.reflect.Proxy`` generates in Java: every method of the
    interface is implemented by the same forwarding code. Its instances are built with
    ``(call, target)``, where ``call(method_spec, args, kwargs)`` performs the remote call.
    Arguments are checked against the interface locally, before anything is sent: a wrong call is
    a ``TypeError`` here, and an unknown method an ``AttributeError`` (the class simply has no
    such attribute).
    """

    def make_method(method: MethodSpec) -> Callable[..., Any]:
        def forward(self: Any, /, *args: Any, **kwargs: Any) -> Any:
            method.check_arguments(args, kwargs)
            return self._rpc_call(method, args, kwargs)

        forward.__name__ = forward.__qualname__ = method.name
        forward.__doc__ = getattr(spec.interface, method.name).__doc__
        forward.__signature__ = method.signature  # type: ignore[attr-defined]
        return forward

    def __init__(self: Any, call: Callable[..., Any], target: str) -> None:
        self._rpc_call = call
        self._rpc_target = target

    def __repr__(self: Any) -> str:
        kind = "async proxy" if asynchronous else "proxy"
        return f"<{kind} for {spec.address} at {self._rpc_target}>"

    namespace: dict[str, Any] = {name: make_method(m) for name, m in spec.methods.items()}
    namespace.update(__init__=__init__, __repr__=__repr__, __module__=__name__,
                     __rpc_api__=spec, __slots__=("_rpc_call", "_rpc_target"))
    name = f"{spec.interface.__name__}{'AsyncProxy' if asynchronous else 'Proxy'}"
    return type(name, (spec.interface,), namespace)
