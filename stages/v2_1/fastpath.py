"""v2.1's hot path: the pieces of v1.0 and v2.0 that every call runs, made cheaper.

v1.0 and v2.0 are written to be read: ``Signature.bind`` checks arguments, standard pickle carries
values, the codec keeps one buffer. v2.1's lesson is many calls per second over one connection,
and at 64 calls in flight each side spends some 20 µs of CPU per call, so a microsecond saved on
each side is a few per cent more calls per second. This module holds every such saving, in one
place; the rest of v2.1 uses plain code. Each step keeps the behaviour of the piece it replaces
(``tests/v2_1/test_fastpath.py`` checks each against it, refusals included), and each is measured
against it by :func:`stages.v2_1.bench.fastpath_gains` (notebook 03a shows this run's figures):

=================================  =======================================================
step                               replaces
=================================  =======================================================
:class:`QuickMethodSpec`           ``Signature.bind`` for calls with positional arguments
                                   only, on the proxy's side and on the server's
:class:`RecordPickleSerializer`    for an answer that is one data class: pickle's way of
                                   saving an object (class global, then a dict of its
                                   fields) by a *record*
=================================  =======================================================

v2.1 puts them to work in three places: the client's ``_prepare`` and the server's ``bind`` use
:func:`quick_spec`; the client uses :func:`faster` on the serializer it calls with, and the server
offers the faster serializers beside v2.0's (``_rebuild_serializers``).
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from stages.v1_0.errors import clip
from stages.v2_0.api import ApiSpec, MethodSpec
from stages.v2_0.errors import SerializationError
from stages.v2_0.limits import DEFAULT_LIMITS, DecodeLimits
from stages.v2_0.serializers import (
    Outcome,
    PickleSerializer,
    Serializer,
    TypeRegistry,
)

__all__ = ["QuickMethodSpec", "quick_spec", "RecordPickleSerializer", "record_fields", "faster"]


# -- checking arguments ------------------------------------------------------------------------

_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclasses.dataclass(frozen=True)
class QuickMethodSpec(MethodSpec):
    """A :class:`MethodSpec` whose argument check skips ``Signature.bind`` when it can.

    Most calls pass positional arguments only, like ``get_user(123456)``. When the signature has
    no ``*args`` and no keyword-only parameter without a default, such a call fits exactly when
    the number of arguments lies between the required and the total number of positional
    parameters: one comparison instead of ``Signature.bind``, which builds a ``BoundArguments``
    and costs over a microsecond. Any other call (keywords, a count out of range) goes to
    ``Signature.bind``, so the error a caller sees is the same.
    """

    #: (fewest, most) positional arguments that fit with no keywords; None when the signature
    #: is not that simple.
    positional: tuple[int, int] | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        params = list(self.signature.parameters.values())
        if all(p.kind in _PLAIN or (p.kind == p.KEYWORD_ONLY and p.default is not p.empty)
               for p in params):
            positional = [p for p in params if p.kind in _PLAIN]
            required = sum(p.default is p.empty for p in positional)
            object.__setattr__(self, "positional", (required, len(positional)))

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        fits = self.positional
        if fits is not None and not kwargs and fits[0] <= len(args) <= fits[1]:
            return
        super().check_arguments(args, kwargs)


def quick_spec(spec: ApiSpec) -> ApiSpec:
    """``spec`` with each method's argument check replaced by :class:`QuickMethodSpec`'s."""
    methods = {name: QuickMethodSpec(m.name, m.signature) for name, m in spec.methods.items()}
    return dataclasses.replace(spec, methods=MappingProxyType(methods))


# -- pickle records ----------------------------------------------------------------------------


def record_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a data class that pickle saves the default way, or None.

    The default way is "this class, then the instance's ``__dict__``": no ``__slots__``, no
    ``__new__`` of its own, and none of the methods by which a class takes over its own
    pickling. Only such a class can travel as a record and come back exactly as pickle would
    have rebuilt it.
    """
    if not dataclasses.is_dataclass(cls) or any("__slots__" in vars(k) for k in cls.__mro__[:-1]):
        return None
    for method in ("__new__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__",
                   "__getnewargs__", "__getnewargs_ex__"):
        if getattr(cls, method, None) is not getattr(object, method, None):
            return None
    return tuple(f.name for f in dataclasses.fields(cls))


class RecordPickleSerializer(PickleSerializer):
    """v2.0's pickle serializer (same id, same wire for everything else), with two savings.

    **Records.** A getter's answer is usually one registered data class. Pickle saves it as "the
    global ``module.User``, an empty instance, then a dict of field names and values"; the
    receiver looks the global up (here: through the allow-list), builds the instance and sets
    its ``__dict__``. A record sends the class and its field names as one string, then the values
    as a tuple::

        ("stages.v2_0.user_stub.types.User(id,name,email)", (123456, "Alan Turing", "..."))

    in the place of the envelope's ``True``. It is shorter, cheaper to encode and to decode, and
    its class is found in this side's registry by name. The instance is rebuilt as pickle
    rebuilds it, without ``__init__``, with its fields set by the names the sender gave; the
    decoded value then gets v2.0's whole check (limits, declared fields and types,
    ``__post_init__``). Naming the fields keeps this right when the two sides' stubs differ: a
    value lands on the field its sender meant, never on whatever sits at the same position.

    Since its answers are not standard pickle, it has a serializer id of its own, 3, in the
    frame header: a v2.1 client asks in 3 and gets records; a v2.0 client asks in 2 (standard
    pickle) and gets standard pickle, since a v2.1 server offers both. A v2.0 server does not
    know 3 and says so ("serializer id 3 is not enabled"): a v2.1 client calls v2.1 servers.
    Requests are standard pickle in both.

    (An unpickler set up in C instead of Python was tried here too: about 0.3 µs per decode,
    within the noise of a short run, so it went.)
    """

    serializer_id = 3

    def __init__(self, registry: TypeRegistry | None = None,
                 limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        super().__init__(registry, limits)
        #: class -> (record name, a function returning its field values, how many fields)
        self._record_of: dict[type, tuple[str, Callable[[Any], tuple[Any, ...]], int]] = {}
        #: record name -> (class, its field names): the records of this side's own stubs
        self._record_named: dict[str, tuple[type, tuple[str, ...]]] = {}
        for name, cls in self.registry.types.items():
            fields = record_fields(cls)
            if fields is not None:
                record_name = f"{name}({','.join(fields)})"
                self._record_of[cls] = (record_name, _getter(fields), len(fields))
                self._record_named[record_name] = (cls, fields)

    def encode_outcome(self, outcome: Outcome) -> bytes:
        value, error = outcome
        if error is None:
            record = self._record_of.get(type(value))
            # Only the fields travel: an instance holding more (an attribute set later) is
            # pickled whole, the standard way.
            if record is not None and len(value.__dict__) == record[2]:
                return self._dumps((record[0], record[1](value)))
        return super().encode_outcome(outcome)

    def decode_outcome(self, data: bytes) -> Outcome:
        loaded = self._loads(data)
        if type(loaded) is tuple and len(loaded) == 2 and type(loaded[0]) is str:
            value = self._record(*loaded)
            self.check(value, len(data))
            return Outcome(value)
        return self.outcome_of(loaded, len(data))

    def _record(self, name: str, values: Any) -> Any:
        cls, fields = self._record_named.get(name) or self._other_version(name)
        if type(values) is not tuple or len(values) != len(fields):
            raise SerializationError(f"pickle: a {clip(name)} record needs {len(fields)} values")
        instance: Any = object.__new__(cls)
        instance.__dict__.update(zip(fields, values))
        return instance

    def _other_version(self, name: str) -> tuple[type, tuple[str, ...]]:
        """A record of a registered class whose fields differ from ours (the sender's stub is
        another version): its fields are the ones it names."""
        class_name, _, rest = name.partition("(")
        cls = self.registry.types.get(class_name)
        if cls is None or record_fields(cls) is None or not rest.endswith(")"):
            raise SerializationError(f"pickle: {clip(repr(name))} is not a record of a "
                                     "registered data class")
        fields = tuple(rest[:-1].split(",")) if rest != ")" else ()
        if not all(f.isidentifier() for f in fields) or len(set(fields)) != len(fields):
            raise SerializationError(f"pickle: bad field names in record {clip(repr(name))}")
        return cls, fields


def _getter(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function of an instance returning the tuple of its ``fields``, in C where it can be."""
    if len(fields) >= 2:
        return operator.attrgetter(*fields)  # returns a tuple for two names or more
    return lambda instance: tuple(getattr(instance, name) for name in fields)


def faster(serializer: Serializer) -> Serializer:
    """The serializer v2.1 uses in place of ``serializer``: records for pickle, else itself."""
    if type(serializer) is PickleSerializer:
        return RecordPickleSerializer(serializer.registry, serializer.limits)
    return serializer
