"""Serialization: how a call and its outcome become the body of a frame, and back.

v1.0's body was a readable text line with string parameters. v2.0 passes real Python values, so
it needs a *serializer*, and it makes the serializer pluggable: each one has a fixed numeric
``serializer_id`` that travels in the frame header's ``codec`` byte, so the receiver knows how to
read the body before it reads it.

=====  ============  ===================================================================
  id   name          what it is
=====  ============  ===================================================================
   0   (text)        v1.0's request line; not a serializer of v2.0
   1   protobuf      schema-bound messages from real ``.proto`` files (protos/rpc_envelope.proto)
   2   pickle        Python's own object serialization, restricted to an allow-list
=====  ============  ===================================================================

The ids are part of the wire format: never change them.

**Pickle is dangerous by design.** Unpickling can call any function the bytes name: a payload
whose ``__reduce__`` returns ``(os.system, ("rm -rf ~",))`` runs that command on the machine that
loads it. So this serializer loads through an :class:`AllowListUnpickler` whose ``find_class``
accepts only plain value types and the data classes that stub packages register, and refuses
everything else *before* it is imported or called. And the receiver, not the sender, decides which
serializers it accepts: a frame naming a serializer that the server did not enable is refused
before a byte of its body is decoded (see ``ServerConfig(serializers=...)``).

Both serializers carry the same envelope: an :class:`Invocation` (address, method, arguments) and
an :class:`Outcome` (a value, or an :class:`ErrorInfo`).

**Decoding is bounded.** Whatever a payload asks for, decoding it costs no more than the
:class:`~stages.v2_0.limits.DecodeLimits` derived from the frame cap allow: a pickle's opcodes are
read before it is loaded (:mod:`~stages.v2_0.pickle_scan`), and every decoded value, of either
serializer, is walked once with a budget and its data classes checked against their declarations
(:mod:`~stages.v2_0.limits`). Every refusal is a :class:`SerializationError`.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import dataclasses
import datetime
import decimal
import io
import pickle
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from stages.v1_0.errors import clip
from stages.v2_0.api import ApiSpec
from stages.v2_0.errors import ApiDefinitionError, ConfigError, SerializationError
from stages.v2_0.limits import DEFAULT_LIMITS, DecodeLimits, check_value
from stages.v2_0.pickle_scan import scan_pickle
from stages.v2_0.protos import rpc_envelope_pb2 as pb

__all__ = [
    "Invocation", "ErrorInfo", "Outcome", "TypeRegistry", "Serializer", "PickleSerializer",
    "ProtobufSerializer", "AllowListUnpickler", "allowed_globals", "SERIALIZERS", "serializer_by_name",
    "proto_type", "qualified_name",
]

T = TypeVar("T", bound=type)


# -- the envelope ----------------------------------------------------------------------------


# The envelope types are named tuples: immutable, and they unpack like the tuples they are.


class Invocation(NamedTuple):
    """A call: which API, which method, with which arguments."""

    address: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = MappingProxyType({})


class ErrorInfo(NamedTuple):
    """An exception raised by the remote method, in a form any serializer can carry.

    Attributes:
        type: fully qualified class name (``builtins.KeyError``, ``pkg.module.OutOfStock``).
        message: ``str()`` of the exception.
        args: the exception's ``args``, used to rebuild it on the caller's side.
        traceback: the remote traceback as text.
    """

    type: str
    message: str
    args: tuple[Any, ...] = ()
    traceback: str = ""


class Outcome(NamedTuple):
    """What a call produced: ``value``, or ``error`` when it raised."""

    value: Any = None
    error: ErrorInfo | None = None


def qualified_name(cls: type) -> str:
    """``module.QualifiedName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


# -- registered types ------------------------------------------------------------------------


def proto_type(message_class: type[Message]) -> Any:
    """Class decorator: pair a data class with the protobuf message that carries it.

    The message must have a field of the same name for each field of the data class. The
    protobuf serializer then converts between the two field by field::

        @proto_type(user_pb2.User)
        @dataclass(frozen=True)
        class User:
            id: int
            name: str
            email: str
    """

    def decorate(cls: T) -> T:
        if not dataclasses.is_dataclass(cls):
            raise ApiDefinitionError(f"@proto_type needs a dataclass, got {cls!r}")
        fields = message_class.DESCRIPTOR.fields_by_name
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in fields]
        if missing:
            raise ApiDefinitionError(
                f"{message_class.DESCRIPTOR.full_name} has no field for {cls.__qualname__}."
                f"{', '.join(missing)}")
        cls.__rpc_proto__ = message_class  # type: ignore[attr-defined]
        return cls

    return decorate


@dataclass(frozen=True)
class TypeRegistry:
    """The data classes and exception classes that may cross the wire.

    Built from the :class:`ApiSpec` of every interface a client or server uses; a registry never
    changes: :meth:`with_api` returns a new one.
    """

    types: Mapping[str, type] = field(default_factory=dict)
    exceptions: Mapping[str, type[BaseException]] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: Iterable[ApiSpec]) -> TypeRegistry:
        registry = cls()
        for spec in specs:
            registry = registry.with_api(spec)
        return registry

    def with_api(self, spec: ApiSpec) -> TypeRegistry:
        for data_type in spec.types:
            if not dataclasses.is_dataclass(data_type):
                raise ApiDefinitionError(
                    f"{spec.interface.__qualname__} declares {data_type!r}, which is not a dataclass")
        return TypeRegistry(
            {**self.types, **{qualified_name(t): t for t in spec.types}},
            {**self.exceptions, **{qualified_name(e): e for e in spec.exceptions}},
        )

    def exception_class(self, name: str) -> type[BaseException] | None:
        """The class to rebuild a remote exception with: a declared one, or a built-in
        ``Exception`` (not ``SystemExit`` or ``KeyboardInterrupt``, which are not errors)."""
        if name in self.exceptions:
            return self.exceptions[name]
        module, _, attr = name.rpartition(".")
        if module == "builtins":
            candidate = getattr(builtins, attr, None)
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                return candidate
        return None


# -- the serializer interface ----------------------------------------------------------------


class Serializer(abc.ABC):
    """Encodes invocations and outcomes into frame bodies, and decodes them.

    Args:
        registry: the data and exception classes this side accepts.
        limits: what decoding one payload may cost (derive them from the frame cap with
            :meth:`DecodeLimits.for_frame`).

    Every ``decode_*`` raises :class:`SerializationError` for bytes it cannot or will not decode;
    every ``encode_*`` raises it for a value it cannot represent. Nothing else escapes.
    """

    #: Carried in every frame header's codec byte. Never change it.
    serializer_id: ClassVar[int]
    name: ClassVar[str]

    def __init__(self, registry: TypeRegistry | None = None,
                 limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.registry = registry or TypeRegistry()
        self.limits = limits
        self._classes = frozenset(self.registry.types.values())

    def check(self, value: Any, payload_size: int) -> None:
        """Walk a decoded value within the limits and validate its data classes (see
        :func:`~stages.v2_0.limits.check_value`)."""
        try:
            check_value(value, payload_size=payload_size, limits=self.limits,
                        classes=self._classes)
        except SerializationError as exc:
            raise SerializationError(f"{self.name}: {exc}") from None

    @abc.abstractmethod
    def encode_invocation(self, invocation: Invocation) -> bytes: ...

    @abc.abstractmethod
    def decode_invocation(self, data: bytes) -> Invocation: ...

    @abc.abstractmethod
    def encode_outcome(self, outcome: Outcome) -> bytes: ...

    @abc.abstractmethod
    def decode_outcome(self, data: bytes) -> Outcome: ...


# -- pickle ----------------------------------------------------------------------------------


#: Globals a pickle of plain values may name. int, float, str, bytes, bytearray, bool, None,
#: list, tuple, dict, set and frozenset have opcodes of their own and need no global at all.
#: Only value types are here, never a general-purpose constructor: ``bytearray`` would allow
#: ``bytearray(10**9)``, a gigabyte from a few bytes, and protocol 5 does not need it.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "complex"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "datetime"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
})


class AllowListUnpickler(pickle.Unpickler):
    """An unpickler that can only build allowed classes.

    ``find_class`` is the one door through which a pickle reaches code: every global the
    payload names (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) goes through it.
    Allowed are :data:`SAFE_GLOBALS` and the registry's data classes; anything else raises
    before it is imported.
    """

    def __init__(self, data: bytes, registry: TypeRegistry | None = None, *,
                 allowed: Mapping[tuple[str, str], Any] | None = None) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed if allowed is not None else allowed_globals(registry)

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"global '{clip(f'{module}.{name}')}' is forbidden")
        return allowed


def allowed_globals(registry: TypeRegistry | None) -> dict[tuple[str, str], Any]:
    """``(module, name) -> object`` for every global an allow-listed pickle may name."""
    modules = {"builtins": builtins, "datetime": datetime, "decimal": decimal}
    allowed: dict[tuple[str, str], Any] = {
        (module, name): getattr(modules[module], name) for module, name in SAFE_GLOBALS}
    for cls in (registry.types.values() if registry is not None else ()):
        allowed[(cls.__module__, cls.__qualname__)] = cls
    return allowed


class PickleSerializer(Serializer):
    """Python's pickle, loading through :class:`AllowListUnpickler`.

    It keeps Python types exactly (tuples stay tuples, sets stay sets), at the price of being
    readable only by Python. Data classes must be registered (in their interface's ``types``)
    to be accepted.

    The envelope is a tuple: ``(address, method, args, kwargs)`` for a call;
    ``(True, value)`` or ``(False, (type, message, args, traceback))`` for an outcome.
    """

    serializer_id = 2
    name = "pickle"

    # Protocol 5: the newest and most compact; both ends run the same Python major version.
    PROTOCOL: ClassVar[int] = 5

    def __init__(self, registry: TypeRegistry | None = None,
                 limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        super().__init__(registry, limits)
        self._allowed = allowed_globals(self.registry)

    def encode_invocation(self, invocation: Invocation) -> bytes:
        address, method, args, kwargs = invocation
        return self._dumps((address, method, tuple(args), dict(kwargs)))

    def decode_invocation(self, data: bytes) -> Invocation:
        loaded = self._loads(data)
        if type(loaded) is tuple and len(loaded) == 4:
            address, method, args, kwargs = loaded
            if (type(address) is str and type(method) is str and type(args) is tuple
                    and type(kwargs) is dict and all(type(k) is str for k in kwargs)):
                self.check(loaded, len(data))
                return Invocation(address, method, args, kwargs)
        raise SerializationError("pickle: not a request envelope")

    def encode_outcome(self, outcome: Outcome) -> bytes:
        value, e = outcome
        if e is None:
            return self._dumps((True, value))
        try:
            data = self._dumps((False, (e.type, e.message, tuple(e.args), e.traceback)))
            self._loads(data)  # args the other side would refuse (not allow-listed) are no use
            return data
        except SerializationError:  # send the message alone
            return self._dumps((False, (e.type, e.message, (), e.traceback)))

    def decode_outcome(self, data: bytes) -> Outcome:
        return self.outcome_of(self._loads(data), len(data))

    def outcome_of(self, loaded: Any, payload_size: int) -> Outcome:
        """The outcome a loaded response envelope holds, checked (see :meth:`check`)."""
        if type(loaded) is not tuple or len(loaded) != 2:
            raise SerializationError("pickle: not a response envelope")
        ok, value = loaded
        if ok is True:
            self.check(value, payload_size)
            return Outcome(value)
        if ok is False and type(value) is tuple and len(value) == 4:
            type_name, message, args, traceback = value
            if type(type_name) is str and type(message) is str and type(args) is tuple \
                    and type(traceback) is str:
                self.check(args, payload_size)
                return Outcome(error=ErrorInfo(type_name, message, args, traceback))
        raise SerializationError("pickle: not a response envelope")

    def _dumps(self, value: object) -> bytes:
        try:
            return pickle.dumps(value, self.PROTOCOL)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError...
            raise SerializationError(clip(f"pickle cannot encode the value: "
                                          f"{type(exc).__name__}: {exc}")) from None

    def unpickler(self, data: bytes) -> pickle.Unpickler:
        """The unpickler that loads one payload: through the allow-list."""
        return AllowListUnpickler(data, allowed=self._allowed)

    def _loads(self, data: bytes) -> Any:
        scan_pickle(data, self.limits)  # before a single opcode runs: see pickle_scan
        try:
            return self.unpickler(data).load()
        except pickle.UnpicklingError as exc:
            raise SerializationError(clip(f"pickle: {exc}")) from None
        except Exception as exc:  # malformed: EOFError, ValueError, TypeError of a constructor...
            raise SerializationError(clip(f"pickle cannot decode the payload: "
                                          f"{type(exc).__name__}: {exc}")) from None


# -- protobuf --------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class ProtobufSerializer(Serializer):
    """The envelope of ``protos/rpc_envelope.proto``; data classes as their own messages.

    Values are type-checked before encoding: a value protobuf cannot represent (a set, an
    arbitrary object, a data class without a message) is a :class:`SerializationError` that
    names its type, raised before anything is sent. On decoding, every error the protobuf
    runtime or a data class's constructor raises (a corrupt ``Any``, a wrong wire type, an
    integer too large) becomes a :class:`SerializationError` too.
    """

    serializer_id = 1
    name = "protobuf"

    def __init__(self, registry: TypeRegistry | None = None,
                 limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        super().__init__(registry, limits)
        self._by_message = {
            t.__rpc_proto__.DESCRIPTOR.full_name: t
            for t in self.registry.types.values() if hasattr(t, "__rpc_proto__")
        }

    # envelope

    def encode_invocation(self, invocation: Invocation) -> bytes:
        msg = pb.Request(address=invocation.address, method=invocation.method)
        for arg in invocation.args:
            self._to_value(arg, msg.args.add())
        for key, arg in invocation.kwargs.items():
            self._to_value(arg, msg.kwargs[key])
        return msg.SerializeToString()

    def decode_invocation(self, data: bytes) -> Invocation:
        with _decoding():
            msg = self._parse(pb.Request, data)
            invocation = Invocation(
                msg.address, msg.method,
                tuple(self._from_value(v) for v in msg.args),
                {k: self._from_value(v) for k, v in msg.kwargs.items()},
            )
        self.check((invocation.args, invocation.kwargs), len(data))
        return invocation

    def encode_outcome(self, outcome: Outcome) -> bytes:
        msg = pb.Response()
        if outcome.error is None:
            self._to_value(outcome.value, msg.value)
        else:
            e = outcome.error
            msg.error.type, msg.error.message, msg.error.traceback = e.type, e.message, e.traceback
            try:
                for arg in e.args:
                    self._to_value(arg, msg.error.args.add())
            except SerializationError:  # args protobuf cannot carry: send the message alone
                del msg.error.args[:]
        return msg.SerializeToString()

    def decode_outcome(self, data: bytes) -> Outcome:
        with _decoding():
            msg = self._parse(pb.Response, data)
            which = msg.WhichOneof("outcome")
            if which == "error":
                e = msg.error
                outcome = Outcome(error=ErrorInfo(
                    e.type, e.message, tuple(self._from_value(a) for a in e.args), e.traceback))
                self.check(outcome.error.args, len(data))  # type: ignore[union-attr]
                return outcome
            if which != "value":
                raise SerializationError("protobuf: response has neither a value nor an error")
            outcome = Outcome(value=self._from_value(msg.value))
        self.check(outcome.value, len(data))
        return outcome

    @staticmethod
    def _parse(message_class: type[Message], data: bytes) -> Any:
        msg = message_class()
        try:
            msg.ParseFromString(data)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            raise SerializationError(clip(f"protobuf cannot parse the "
                                          f"{message_class.DESCRIPTOR.name}: {exc}")) from None
        return msg

    # dynamic values

    def _to_value(self, value: Any, out: pb.Value, depth: int = 0) -> None:
        if depth > 64:
            raise SerializationError("protobuf: value nested more than 64 levels deep")
        if value is None:
            out.null = pb.NULL_VALUE
        elif isinstance(value, bool):  # before int: bool is a subclass of int
            out.bool = value
        elif isinstance(value, int):
            if _INT64_MIN <= value <= _INT64_MAX:
                out.int = value
            else:
                out.big_int = str(value)
        elif isinstance(value, float):
            out.float = value
        elif isinstance(value, str):
            out.str = value
        elif isinstance(value, (bytes, bytearray)):
            out.bytes = bytes(value)
        elif isinstance(value, (list, tuple)):
            items = out.list.items
            for item in value:
                self._to_value(item, items.add(), depth + 1)
            out.list.SetInParent()  # an empty list is still a list, not "no value"
        elif isinstance(value, dict):
            entries = out.map.entries
            for key, item in value.items():
                entry = entries.add()
                self._to_value(key, entry.key, depth + 1)
                self._to_value(item, entry.value, depth + 1)
            out.map.SetInParent()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.message.Pack(self._to_message(value, depth + 1))
        else:
            raise SerializationError(
                f"protobuf cannot encode a value of type {qualified_name(type(value))} "
                "(supported: None, bool, int, float, str, bytes, list, tuple, dict and "
                "registered data classes)")

    def _from_value(self, value: pb.Value, depth: int = 0) -> Any:
        if depth > 64:
            raise SerializationError("protobuf: value nested more than 64 levels deep")
        kind = value.WhichOneof("kind")
        if kind == "list":
            return [self._from_value(v, depth + 1) for v in value.list.items]
        if kind == "map":
            result = {}
            for entry in value.map.entries:
                key = self._from_value(entry.key, depth + 1)
                try:
                    result[key] = self._from_value(entry.value, depth + 1)
                except TypeError:
                    raise SerializationError(f"protobuf: unhashable map key of type "
                                             f"{type(key).__name__}") from None
            return result
        if kind == "message":
            return self._from_any(value.message, depth + 1)
        if kind == "big_int":
            # Checked before int(): converting text to an int takes time quadratic in its length.
            if len(value.big_int) > self.limits.max_int_bits // 3 + 2:
                raise SerializationError(f"protobuf: an integer of {len(value.big_int)} digits "
                                         f"is larger than the limit of "
                                         f"{self.limits.max_int_bits} bits")
            try:
                return int(value.big_int)
            except ValueError:
                raise SerializationError(f"protobuf: bad big_int {clip(repr(value.big_int))}") \
                    from None
        if kind == "null" or kind is None:
            return None
        return getattr(value, kind)  # bool, int, float, str, bytes

    # data classes <-> messages, field by field

    def _to_message(self, obj: Any, depth: int) -> Message:
        cls = type(obj)
        message_class: type[Message] | None = getattr(cls, "__rpc_proto__", None)
        if message_class is None or self.registry.types.get(qualified_name(cls)) is not cls:
            raise SerializationError(
                f"protobuf cannot encode {qualified_name(cls)}: it is not a data type registered "
                "by the interface (types=...) with a @proto_type message")
        msg = message_class()
        for f in dataclasses.fields(obj):
            # The stubs type DESCRIPTOR as the pure-Python or the upb class; at run time the upb
            # one passes isinstance(..., Descriptor) too, so one type covers both.
            fd = cast(Descriptor, msg.DESCRIPTOR).fields_by_name[f.name]
            self._set_field(msg, fd, getattr(obj, f.name), depth)
        return msg

    def _set_field(self, msg: Any, fd: FieldDescriptor, value: Any, depth: int) -> None:
        try:
            if value is None:
                if fd.has_presence:
                    return  # unset means None
                raise SerializationError(f"field {fd.full_name} cannot be None")
            if _is_map(fd):
                target = getattr(msg, fd.name)
                # A map field has a message type (its entry): never None here.
                value_fd = cast(Descriptor, fd.message_type).fields_by_name["value"]
                for key, item in value.items():
                    if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                        target[key].CopyFrom(self._to_message(item, depth + 1))
                    else:
                        target[key] = item
            elif fd.is_repeated:
                target = getattr(msg, fd.name)
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(self._to_message(item, depth + 1))
                else:
                    target.extend(value)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, fd.name).CopyFrom(self._to_message(value, depth + 1))
            else:
                setattr(msg, fd.name, value)
        except SerializationError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise SerializationError(f"protobuf cannot set {fd.full_name} to "
                                     f"{type(value).__name__} {value!r:.60}: {exc}") from None

    def _from_any(self, packed: any_pb2.Any, depth: int) -> Any:
        type_name = packed.TypeName()
        cls = self._by_message.get(type_name)
        if cls is None:
            raise SerializationError(f"protobuf: message type {clip(repr(type_name))} is not "
                                     "registered here")
        msg = cls.__rpc_proto__()
        if not packed.Unpack(msg):
            raise SerializationError(f"protobuf: cannot unpack {type_name}")
        return self._from_message(cls, msg, depth)

    def _from_message(self, cls: type, msg: Any, depth: int) -> Any:
        if depth > 64:
            raise SerializationError("protobuf: value nested more than 64 levels deep")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            fd = msg.DESCRIPTOR.fields_by_name[f.name]
            value = getattr(msg, f.name)
            if _is_map(fd):
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    sub = self._class_for(value_fd.message_type.full_name)
                    kwargs[f.name] = {k: self._from_message(sub, v, depth + 1) for k, v in value.items()}
                else:
                    kwargs[f.name] = dict(value)
            elif fd.is_repeated:
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    sub = self._class_for(fd.message_type.full_name)
                    kwargs[f.name] = [self._from_message(sub, v, depth + 1) for v in value]
                else:
                    kwargs[f.name] = list(value)
            elif fd.has_presence and not msg.HasField(f.name):
                kwargs[f.name] = None
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                sub = self._class_for(fd.message_type.full_name)
                kwargs[f.name] = self._from_message(sub, value, depth + 1)
            else:
                kwargs[f.name] = value
        return cls(**kwargs)

    def _class_for(self, message_name: str) -> type:
        cls = self._by_message.get(message_name)
        if cls is None:
            raise SerializationError(f"protobuf: message type {clip(repr(message_name))} is not "
                                     "registered here")
        return cls


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Turn whatever decoding raises into a :class:`SerializationError` with a bounded message.

    The protobuf runtime raises its own errors for a corrupt ``Any`` or a value out of range, and
    a data class's ``__init__`` raises what it likes (TypeError, ValueError...): a caller of
    ``decode_*`` sees only SerializationError.
    """
    try:
        yield
    except SerializationError:
        raise
    except RecursionError:
        raise SerializationError("protobuf: value nested too deeply") from None
    except Exception as exc:
        raise SerializationError(clip(f"protobuf cannot decode the payload: "
                                      f"{type(exc).__name__}: {exc}")) from None


def _is_map(fd: FieldDescriptor) -> bool:
    # A field of TYPE_MESSAGE always has its message_type set: never None after the first test.
    return (fd.type == FieldDescriptor.TYPE_MESSAGE and fd.is_repeated
            and cast(Descriptor, fd.message_type).GetOptions().map_entry)


#: Every serializer of v2.0, by id.
SERIALIZERS: Mapping[int, type[Serializer]] = {
    s.serializer_id: s for s in (ProtobufSerializer, PickleSerializer)
}


def serializer_by_name(name: str) -> type[Serializer]:
    """``"pickle"`` -> :class:`PickleSerializer`, ``"protobuf"`` -> :class:`ProtobufSerializer`.

    Raises:
        ConfigError: no serializer of that name (a ValueError too).
    """
    for cls in SERIALIZERS.values():
        if cls.name == name:
            return cls
    raise ConfigError(f"unknown serializer {name!r} (known: "
                     f"{', '.join(c.name for c in SERIALIZERS.values())})")
