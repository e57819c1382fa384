"""The v2.0 server: bind implementations to API addresses and run the calls they receive.

v1.0's server kept a table *service name -> method name -> function* filled by hand. v2.0's
table is filled by :meth:`Server.bind`: *API address -> implementation*, with the methods taken
from the interface. The connection handling is v1.0's, unchanged (``ServerConnection``); what
changes is :meth:`Server.handle`, which now reads the frame's serializer id, decodes an
:class:`~stages.v2_0.serializers.Invocation`, and answers with an
:class:`~stages.v2_0.serializers.Outcome`.

Dispatch refuses, before touching the implementation:

* a serializer the server did not enable (the body is not even looked at);
* an address nobody bound;
* a method the interface does not declare, which includes every name starting with ``_``: the
  server never does ``getattr(impl, name)`` with a name that came off the network;
* arguments that do not fit the interface's signature.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stages.v1_0 import server as v1_0
from stages.v1_0.errors import clip
from stages.v1_0.protocol import Frame, FrameType
from stages.v2_0.api import ApiSpec, api_spec
from stages.v2_0.config import ServerConfig
from stages.v2_0.errors import ApiDefinitionError, SerializationError, Status
from stages.v2_0.limits import DecodeLimits
from stages.v2_0.serializers import (
    SERIALIZERS,
    ErrorInfo,
    Invocation,
    Outcome,
    Serializer,
    TypeRegistry,
    qualified_name,
    serializer_by_name,
)

__all__ = ["Server", "Binding", "ServerConnection", "MAX_REMOTE_MESSAGE"]

#: Longest exception message a server sends back (a method's exception may quote its input).
MAX_REMOTE_MESSAGE = 2000

ServerConnection = v1_0.ServerConnection  # unchanged since v1.0


@dataclass(frozen=True)
class Binding:
    """An implementation bound to an API address, with its methods looked up once, at bind time."""

    spec: ApiSpec
    implementation: object
    methods: Mapping[str, Callable[..., Any]]


class Server(v1_0.Server):
    """Runs bound implementations for remote callers.

    Usage::

        server = Server(ServerConfig(port=0))
        server.bind(UserApi, UserApiImpl())
        async with server:
            await server.serve_forever()
    """

    config: ServerConfig

    def __init__(self, config: ServerConfig | None = None) -> None:
        super().__init__(config or ServerConfig())
        self._bindings: dict[str, Binding] = {}
        self._serializers: dict[int, Serializer] = {}
        self._rebuild_serializers()

    def bind(self, interface: type, implementation: object) -> str:
        """Bind ``implementation`` to the address of ``interface``.

        Returns:
            The API address.

        Raises:
            ApiDefinitionError: ``interface`` is not an RPC interface, the address is already
                bound, or the implementation lacks (or leaves abstract) a method of the interface.
        """
        spec = api_spec(interface)
        if spec.address in self._bindings:
            raise ApiDefinitionError(f"{spec.address} is already bound")
        methods = {}
        for name in spec.methods:
            fn = getattr(implementation, name, None)
            if fn is None or not callable(fn) or getattr(fn, "__isabstractmethod__", False):
                raise ApiDefinitionError(f"{type(implementation).__qualname__} does not implement "
                                         f"{interface.__qualname__}.{name}")
            self.check_method(implementation, name, fn)
            methods[name] = fn
        self._bindings[spec.address] = Binding(spec, implementation, methods)
        self._rebuild_serializers()
        return spec.address

    def check_method(self, implementation: object, name: str, fn: Callable[..., Any]) -> None:
        """Refuse an implementation method this server cannot run (here: a coroutine)."""
        if inspect.iscoroutinefunction(fn):
            raise ApiDefinitionError(f"{type(implementation).__qualname__}.{name} is async; "
                                     "v2.0 runs plain methods (v2.1 runs coroutines)")

    def register(self, service: str, methods: Mapping[str, Callable[..., Any]]) -> None:
        """v1.0's hand-filled table is gone: use :meth:`bind`."""
        raise ApiDefinitionError("v2.0 serves interfaces: use Server.bind(Interface, impl)")

    @property
    def bindings(self) -> Mapping[str, Binding]:
        return dict(self._bindings)

    def _rebuild_serializers(self) -> None:
        # A registry never changes; binding builds a new one and swaps the serializers.
        registry = TypeRegistry.of(b.spec for b in self._bindings.values())
        limits = DecodeLimits.for_frame(self.config.max_frame_size)
        self._serializers = {cls.serializer_id: cls(registry, limits)
                             for cls in map(serializer_by_name, self.config.serializers)}

    def handle(self, frame: Frame) -> Frame:
        """Answer one request frame; never raises (every failure becomes an error response).

        Errors found before the request could be decoded are answered as plain text (codec 0),
        like v1.0's; the outcome of a call is answered in the request's serializer.
        """
        prepared = self.prepare(frame)
        if isinstance(prepared, Frame):
            return prepared
        serializer, invocation = prepared
        status, outcome = self.invoke(invocation)
        return self.respond(frame.request_id, serializer, invocation, status, outcome)

    def prepare(self, frame: Frame) -> Frame | tuple[Serializer, Invocation]:
        """Check a request frame and decode its call, or return the error frame that answers it."""
        ftype, rid, body, codec, _ = frame
        if ftype != FrameType.REQUEST:
            return self.error_frame(rid, Status.PROTOCOL_ERROR,
                                    f"expected a REQUEST frame, got type {ftype}")
        serializer = self._serializers.get(codec)
        if serializer is None:
            known = SERIALIZERS.get(codec)
            name = f"{known.name} (id {codec})" if known else f"id {codec}"
            enabled = ", ".join(self.config.serializers)
            return self.error_frame(rid, Status.BAD_REQUEST, f"serializer {name} is not enabled "
                                    f"on this server (enabled: {enabled})")
        try:
            return serializer, serializer.decode_invocation(body)
        except SerializationError as exc:
            return self.error_frame(rid, Status.BAD_REQUEST, str(exc))

    def respond(self, request_id: int, serializer: Serializer, invocation: Invocation,
                status: Status, outcome: Outcome) -> Frame:
        """Encode a call's outcome as its response frame."""
        try:
            body = serializer.encode_outcome(outcome)
        except SerializationError as exc:
            return self.error_frame(request_id, Status.INTERNAL, f"cannot encode the result of "
                                    f"{clip(invocation.method)}() with {serializer.name}: {exc}")
        return Frame(FrameType.RESPONSE, request_id, body, serializer.serializer_id, status)

    def invoke(self, invocation: Invocation) -> tuple[Status, Outcome]:
        """Run one decoded call: find the binding and the method, check the arguments, call."""
        target = self.resolve(invocation)
        if isinstance(target, tuple):
            return target
        try:
            value = target(*invocation.args, **invocation.kwargs)
        except Exception as exc:  # the method raised: send the exception to the caller
            return self.error_outcome(exc)
        return Status.OK, Outcome(value)

    def resolve(self, invocation: Invocation) -> Callable[..., Any] | tuple[Status, Outcome]:
        """The bound method a call names, after checking its arguments; or the refusal."""
        # Names and arguments came off the network: a message quotes them only clipped.
        binding = self._bindings.get(invocation.address)
        if binding is None:
            return _refused(Status.NOT_FOUND, f"no API is bound at "
                            f"{clip(repr(invocation.address))}")
        method = binding.spec.methods.get(invocation.method)
        if method is None:
            return _refused(Status.NOT_FOUND, f"{binding.spec.interface.__qualname__} has no "
                            f"method {clip(repr(invocation.method))}")
        try:
            method.check_arguments(invocation.args, invocation.kwargs)
        except TypeError as exc:
            return _refused(Status.BAD_REQUEST, clip(str(exc)))
        return binding.methods[method.name]

    def error_outcome(self, exc: Exception) -> tuple[Status, Outcome]:
        """The outcome that carries an exception raised by a method back to its caller: its
        type, its (clipped) message and its ``args``; its traceback only if the server is
        configured to send tracebacks (``send_tracebacks``)."""
        trace = "".join(traceback.format_exception(exc)) if self.config.send_tracebacks else ""
        return Status.INTERNAL, Outcome(error=ErrorInfo(
            qualified_name(type(exc)), clip(str(exc), MAX_REMOTE_MESSAGE), exc.args, trace))


def _refused(status: Status, message: str) -> tuple[Status, Outcome]:
    return status, Outcome(error=ErrorInfo(f"status.{status.name}", message))
