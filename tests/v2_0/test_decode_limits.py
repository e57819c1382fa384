"""The limits on decoding (stages.v2_0.limits, stages.v2_0.pickle_scan), rule by rule, each at its
boundary; and a property: whatever bytes arrive, decoding allocates within a stated bound."""

from __future__ import annotations

import pickle
import struct
import tracemalloc
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v2_0 import (
    Invocation,
    Outcome,
    PickleSerializer,
    ProtobufSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
    api_spec,
)
from stages.v2_0.limits import DecodeLimits, check_value
from stages.v2_0.pickle_scan import scan_pickle
from stages.v2_0.user_stub import Dimensions, InventoryApi, Item, User, UserApi

REGISTRY = TypeRegistry.of([api_spec(UserApi), api_spec(InventoryApi)])
CLASSES = frozenset(REGISTRY.types.values())
LIMITS = DecodeLimits.for_frame(64 * 1024)  # small frames: small budgets, quick tests


def check(value: Any, size: int = 100, limits: DecodeLimits = LIMITS) -> None:
    check_value(value, payload_size=size, limits=limits, classes=CLASSES)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- the walk ----------------------------------------------------------------------------------


def test_depth_is_refused_one_level_past_the_limit() -> None:
    check(nested(LIMITS.max_depth))
    with pytest.raises(SerializationError, match="nested more than 64 levels"):
        check(nested(LIMITS.max_depth + 1))


def test_integers_are_refused_one_bit_past_the_limit() -> None:
    check(2**LIMITS.max_int_bits - 1)
    check(-(2**LIMITS.max_int_bits - 1))
    with pytest.raises(SerializationError, match="2049 bits"):
        check(2**LIMITS.max_int_bits)


def test_shared_references_are_paid_each_time_they_are_reached() -> None:
    leaf = ["x" * 100]
    shared = [leaf] * 1000  # 1,000 references to one list: 1000 * (1 + 1 + 101) units
    budget = LIMITS.walk_budget(100)
    assert 1000 * 103 > budget  # far more than the budget of a 100-byte payload...
    with pytest.raises(SerializationError, match="shared parts are counted"):
        check(shared, size=100)
    check(shared, size=1000 * 103 // LIMITS.expansion)  # ...and within that of a larger one


def test_a_data_class_is_checked_field_by_field() -> None:
    check(Item("s", "t", 1, quantity=2, dimensions=Dimensions(1, 2.5, 3)))  # ints for floats
    bad: list[tuple[dict[str, Any], str]] = [
        ({"quantity": "2"}, "Item.quantity must be int, got str"),
        ({"quantity": True}, "Item.quantity must be int, got bool"),
        ({"tags": ["a", 1]}, "Item.tags must be list"),
        ({"attributes": {"k": 1}}, "Item.attributes must be dict"),
        ({"dimensions": "big"}, "Item.dimensions must be"),
        ({"note": 3}, "Item.note must be"),
        ({"price": float("nan")}, "invalid Item: price must be >= 0"),
    ]
    for change, message in bad:
        item = object.__new__(Item)
        item.__dict__.update(vars(Item("s", "t", 1.0)), **change)
        with pytest.raises(SerializationError, match=message):
            check(item)


def test_an_unregistered_class_may_not_travel() -> None:
    @dataclass
    class Stranger:
        a: int

    with pytest.raises(SerializationError, match="Stranger may not travel"):
        check([Stranger(1)])


# -- the pickle scan ---------------------------------------------------------------------------


def test_memo_slots_must_be_written_in_order_and_read_after() -> None:
    scan_pickle(b"\x80\x05N\x94h\x00\x86.", LIMITS)  # MEMOIZE slot 0, BINGET 0
    scan_pickle(b"\x80\x05Nq\x00h\x00\x86.", LIMITS)  # BINPUT 0 is the next slot: fine
    with pytest.raises(SerializationError, match="memo slot 1 written out of order"):
        scan_pickle(b"\x80\x05Nq\x01.", LIMITS)
    with pytest.raises(SerializationError, match="memo slot 0 read before"):
        scan_pickle(b"\x80\x05h\x00.", LIMITS)
    with pytest.raises(SerializationError, match="memo slot 1 read before"):
        scan_pickle(b"\x80\x05N\x94j\x01\x00\x00\x00.", LIMITS)


def test_integers_in_a_pickle_stop_at_the_limit() -> None:
    def long4(size: int) -> bytes:  # LONG4: a 4-byte length, then the integer's bytes
        return b"\x80\x05\x8b" + struct.pack("<i", size) + b"\x01" * size + b"."

    at_limit = LIMITS.max_int_bits // 8 + 1
    scan_pickle(long4(at_limit), LIMITS)
    with pytest.raises(SerializationError, match=f"integer of {at_limit + 1} bytes"):
        scan_pickle(long4(at_limit + 1), LIMITS)


def test_lengths_must_fit_in_the_payload() -> None:
    scan_pickle(b"\x80\x05\x8c\x03abc.", LIMITS)
    for body in (b"\x80\x05\x8c\x04abc.", b"\x80\x05\x8e" + struct.pack("<Q", 2**40) + b"x.",
                 b"\x80\x05X" + struct.pack("<I", 10) + b"abc."):
        with pytest.raises(SerializationError, match="truncated"):
            scan_pickle(body, LIMITS)


def test_building_stops_at_the_memory_budget() -> None:
    # Each EMPTY_SET is estimated at 240 bytes (a reference and a set).
    fits = LIMITS.memory_budget // 240 - 2
    scan_pickle(b"\x80\x05(" + b"\x8f" * fits + b"l.", LIMITS)
    with pytest.raises(SerializationError, match="would build more than"):
        scan_pickle(b"\x80\x05(" + b"\x8f" * (fits + 200) + b"l.", LIMITS)


@pytest.mark.parametrize("body, what", [
    (b"cos\nsystem\n.", "GLOBAL"),
    (b"\x80\x05I1\n.", "INT"),
    (b"\x80\x05P1\n.", "PERSID"),
    (b"\x80\x05\x82\x01.", "EXT1"),
    (b"\x80\x05\x97.", "NEXT_BUFFER"),
    (b"\x80\x05\x8c\x01a\x8c\x01bi.", "INST"),
])
def test_opcodes_outside_the_binary_value_set_are_refused(body: bytes, what: str) -> None:
    with pytest.raises(SerializationError, match=f"opcode {what} "):
        scan_pickle(body, LIMITS)


def test_a_pickle_ends_at_stop() -> None:
    with pytest.raises(SerializationError, match="no STOP"):
        scan_pickle(b"\x80\x05N", LIMITS)
    with pytest.raises(SerializationError, match="1 bytes after STOP"):
        scan_pickle(b"\x80\x05N.N", LIMITS)
    with pytest.raises(SerializationError, match="protocol 1"):
        scan_pickle(b"\x80\x01N.", LIMITS)


def test_everything_pickle_writes_for_our_values_passes_the_scan() -> None:
    values = [User(1, "a", "b"), Item("s", "t", 1.0, tags=["x"], dimensions=Dimensions(1, 2, 3)),
              {"a": [1, 2.5, None, True, b"x", bytearray(b"y"), (1,), {1, 2}, frozenset({3})]},
              2**100, -5, 300, 70000, "é" * 300]
    for value in values:
        scan_pickle(pickle.dumps(value, 5), LIMITS)


# -- a property over both decoders -------------------------------------------------------------

SERIALIZERS = [PickleSerializer(REGISTRY, LIMITS), ProtobufSerializer(REGISTRY, LIMITS)]


def mutated(serializer: Serializer) -> st.SearchStrategy[bytes]:
    valid = [serializer.encode_invocation(Invocation("ns/Api", "m", (User(1, "a", "b"), [1, 2]))),
             serializer.encode_outcome(Outcome(value={"k": [1.5, "x", None]}))]

    def mutate(base: bytes, edits: list[tuple[int, int]]) -> bytes:
        data = bytearray(base)
        for position, byte in edits:
            data[position % len(data)] = byte
        return bytes(data)

    return (st.sampled_from(valid).flatmap(lambda base: st.lists(
        st.tuples(st.integers(0, len(base)), st.integers(0, 255)), min_size=1, max_size=4)
        .map(lambda edits: mutate(base, edits)))
        | st.binary(max_size=300))


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=[s.name for s in SERIALIZERS])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decoding_any_bytes_allocates_within_the_bound(serializer: Serializer,
                                                        data: st.DataObject) -> None:
    body = data.draw(mutated(serializer))
    tracemalloc.start()
    try:
        for decode in (serializer.decode_invocation, serializer.decode_outcome):
            try:
                decode(body)
            except SerializationError as exc:
                assert str(exc).startswith(serializer.name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bound: the memory budget of these limits (256 KiB for 64 KiB frames) and a little for
    # the decoder itself. A memo bomb or a set bomb among the mutations would pass 100 MiB.
    assert peak < LIMITS.memory_budget + 256 * 1024, peak
