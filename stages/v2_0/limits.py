"""What decoding may cost: limits on received values, and the check that enforces them.

A serializer turns bytes from the network into Python objects, and a few hundred bytes can ask
for a great deal. Three kinds of request matter:

* **Building.** A pickle can ask for objects far larger than itself (an empty set is one byte on
  the wire and 216 bytes in memory, 232 with the reference to it; a memo slot numbered
  50,000,000 makes the unpickler allocate 800 MB). That is stopped *before* loading, by reading
  the pickle's opcodes (:mod:`stages.v2_0.pickle_scan`).
* **Sharing.** Loaded, a value can still be a trap: a list that holds the same list twice, thirty
  levels deep, is a few hundred bytes of pickle, but anything that walks it as a tree (printing
  it, copying it, encoding it again as protobuf, a method that sums it) visits 2**30 items. So
  every value that arrives is walked once here, *as a tree*, with a budget: shared parts are
  paid for every time they are reached, and the walk stops, with an error, when the budget is
  spent. What passes costs any later walk no more than this one.
* **Meaning.** A data class rebuilt by pickle never ran its ``__init__``: its fields hold
  whatever the sender put there, and extra attributes too. So each data class instance is checked
  against its declaration: exactly its fields, each of its declared type (``User.id`` is an
  ``int``, not a ``str``), and then its ``__post_init__``, if it has one, which is where a stub
  states its own rules (an ``Item``'s quantity is not negative). Protobuf values get the same
  check, so both serializers deliver the same guarantees.

The limits, all refused with a :class:`SerializationError` that the server answers to the one
call that sent them:

==============================  ==========================================================
limit                           default, and why
==============================  ==========================================================
``memory_budget``               4 x the frame cap (64 MiB): what building a value may cost
``expansion``                   8: a value walked as a tree may cost 8 units per payload
                                byte (plus 64 Ki), one unit per item and per character
``max_depth``                   64 levels of nesting: deeper values are not data, and deep
                                recursion elsewhere would hit Python's recursion limit
``max_int_bits``                2048 bits (617 decimal digits): larger integers make
                                arithmetic and printing slow (Python refuses to print one
                                of more than 4,300 digits)
==============================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import typing
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final

from stages.v1_0.errors import clip
from stages.v1_0.protocol import DEFAULT_MAX_FRAME_SIZE
from stages.v2_0.errors import SerializationError

__all__ = ["DecodeLimits", "DEFAULT_LIMITS", "check_value"]

#: Budget units granted to every value whatever its size: small payloads need not be counted.
_FLOOR: Final = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class DecodeLimits:
    """The limits every decoder enforces; derived from the frame cap by :meth:`for_frame`.

    Attributes:
        max_frame_size: the frame cap they are derived from.
        memory_budget: bytes that building one value may allocate, as the pickle scan
            estimates them.
        expansion: units per payload byte that walking a value as a tree may cost.
        max_depth: levels of nesting (a list in a list is depth 2).
        max_int_bits: size of the largest integer accepted.
    """

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    memory_budget: int = 4 * DEFAULT_MAX_FRAME_SIZE
    expansion: int = 8
    max_depth: int = 64
    max_int_bits: int = 2048

    @classmethod
    def for_frame(cls, max_frame_size: int) -> DecodeLimits:
        """The default limits for a side whose frame cap is ``max_frame_size``."""
        return cls(max_frame_size=max_frame_size, memory_budget=4 * max_frame_size)

    def walk_budget(self, payload_size: int) -> int:
        """Units a value decoded from ``payload_size`` bytes may cost when walked as a tree."""
        return self.expansion * payload_size + _FLOOR


DEFAULT_LIMITS: Final = DecodeLimits()


def check_value(value: Any, *, payload_size: int, limits: DecodeLimits,
                classes: AbstractSet[type]) -> None:
    """Walk a decoded value as a tree, within budget, and validate its data classes.

    Args:
        value: what a decoder produced.
        payload_size: the size of the bytes it came from (the budget grows with it).
        limits: the limits to enforce.
        classes: the registered data classes; an instance of any other class is refused.

    Raises:
        SerializationError: the value is too deep, too large as a tree, holds an integer too
            large, an object of a type that may not travel, or a data class instance that does
            not match its declaration.
    """
    _Walk(limits, limits.walk_budget(payload_size), classes).visit(value, 0)


#: Types whose instances are leaves: nothing inside them to walk.
_ATOMS: Final = frozenset({type(None), bool, float, complex, datetime.date, datetime.time,
                           datetime.datetime, datetime.timedelta, datetime.timezone})
_SEQUENCES: Final = frozenset({list, tuple, set, frozenset})
_TEXT: Final = frozenset({str, bytes, bytearray})


class _Walk:
    """One walk over one value: the budget left, and the data classes allowed."""

    def __init__(self, limits: DecodeLimits, budget: int, classes: AbstractSet[type]) -> None:
        self.limits = limits
        self.left = budget
        self.classes = classes

    def visit(self, value: Any, depth: int) -> None:
        kind = type(value)
        if kind in _TEXT:
            self.spend(1 + len(value))
            return
        self.spend(1)
        if kind is int:
            if value.bit_length() > self.limits.max_int_bits:
                raise SerializationError(f"an integer of {value.bit_length()} bits is larger than "
                                         f"the limit of {self.limits.max_int_bits} bits")
        elif kind in _ATOMS:
            return
        elif kind is decimal.Decimal:
            self.check_decimal(value)
        elif depth >= self.limits.max_depth:
            raise SerializationError(f"value nested more than {self.limits.max_depth} levels deep")
        elif kind in _SEQUENCES:
            for item in value:
                self.visit(item, depth + 1)
        elif kind is dict:
            for key, item in value.items():
                self.visit(key, depth + 1)
                self.visit(item, depth + 1)
        elif kind in self.classes:
            self.check_instance(value, depth)
        else:
            raise SerializationError(f"a value of type {clip(kind.__qualname__)} may not travel")

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise SerializationError("the value is too large once its shared parts are counted "
                                     "each time they appear (a graph of shared references?)")

    def check_decimal(self, value: decimal.Decimal) -> None:
        # Decimal("1e999999999") is a few bytes, but int() of it would have a billion digits.
        if value.is_finite() and abs(value.adjusted()) > self.limits.max_int_bits:
            raise SerializationError(f"a Decimal with exponent {value.adjusted()} is out of range")

    def check_instance(self, obj: Any, depth: int) -> None:
        cls = type(obj)
        shape = _shape(cls)
        state = getattr(obj, "__dict__", None)
        if state is None:  # a data class with __slots__
            state = {name: getattr(obj, name) for name in shape.names if hasattr(obj, name)}
        if state.keys() != shape.names:
            extra = sorted(map(str, state.keys() - shape.names))
            missing = sorted(shape.names - state.keys())
            raise SerializationError(clip(
                f"a {cls.__qualname__} must have exactly its declared fields"
                + (f"; it has undeclared {', '.join(extra)}" if extra else "")
                + (f"; it lacks {', '.join(missing)}" if missing else "")))
        for name, expected, conforms in shape.fields:
            item = state[name]
            if not conforms(item):
                raise SerializationError(f"{cls.__qualname__}.{name} must be {expected}, "
                                         f"got {clip(type(item).__qualname__)}")
            self.visit(item, depth + 1)
        if shape.post_init is not None:
            # The stub's own rules. Run on a value that already has the right shape and types.
            try:
                shape.post_init(obj)
            except Exception as exc:
                raise SerializationError(clip(f"invalid {cls.__qualname__}: {exc}")) from None


# -- the declared shape of a data class, worked out once per class ---------------------------


@dataclass(frozen=True)
class _Shape:
    names: frozenset[str]
    fields: tuple[tuple[str, str, Callable[[Any], bool]], ...]
    post_init: Callable[[Any], None] | None


_shapes: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    shape = _shapes.get(cls)
    if shape is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation that does not resolve: check presence only
            hints = {}
        fields = tuple((f.name, _describe(hints.get(f.name, Any)),
                        _conforms_to(hints.get(f.name, Any)))
                       for f in dataclasses.fields(cls))
        shape = _shapes[cls] = _Shape(frozenset(name for name, _, _ in fields), fields,
                                      getattr(cls, "__post_init__", None))
    return shape


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _conforms_to(annotation: Any) -> Callable[[Any], bool]:
    """A test of "is this value of the declared type?", for the types data classes use.

    Containers are checked item by item (``list[str]``); a nested data class by its class only,
    since the walk checks its own fields when it reaches it. An annotation this function does
    not know (a TypeVar, a Protocol) accepts anything: the walk still bounds the value.
    """
    if annotation is Any or annotation is object:
        return lambda value: True
    if annotation is None or annotation is type(None):
        return lambda value: value is None
    if annotation is int:
        return lambda value: type(value) is int
    if annotation is float:  # an int is a float too, as in Python's own numeric tower
        return lambda value: type(value) is float or type(value) is int
    if annotation is complex:
        return lambda value: type(value) in (complex, float, int)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, _UnionType):
        options = [_conforms_to(a) for a in args]
        return lambda value: any(test(value) for test in options)
    if origin in (list, set, frozenset) and len(args) == 1:
        item = _conforms_to(args[0])
        return lambda value: type(value) is origin and all(item(v) for v in value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _conforms_to(args[0])
            return lambda value: type(value) is tuple and all(item(v) for v in value)
        items = [_conforms_to(a) for a in args]
        return lambda value: (type(value) is tuple and len(value) == len(items)
                              and all(test(v) for test, v in zip(items, value)))
    if origin is dict and len(args) == 2:
        key, item = _conforms_to(args[0]), _conforms_to(args[1])
        return lambda value: type(value) is dict and all(key(k) and item(v)
                                                         for k, v in value.items())
    if origin is not None:  # list without parameters, Mapping[...], ...: the class only
        return _conforms_to(origin)
    if isinstance(annotation, type):  # bool, str, bytes, a data class...
        return lambda value: isinstance(value, annotation)
    return lambda value: True


_UnionType: Any = type(int | None)

