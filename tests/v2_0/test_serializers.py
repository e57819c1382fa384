"""Both serializers, without sockets: round trips, type checks, and hostile input."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v2_0 import (
    ErrorInfo,
    Invocation,
    Outcome,
    PickleSerializer,
    ProtobufSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
    api_spec,
)
from stages.v2_0.user_stub import Dimensions, InventoryApi, Item, Receipt, User, UserApi

REGISTRY = TypeRegistry.of([api_spec(UserApi), api_spec(InventoryApi)])
SERIALIZERS = [PickleSerializer(REGISTRY), ProtobufSerializer(REGISTRY)]
ids = [s.name for s in SERIALIZERS]

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4),
    max_leaves=20,
)

ITEM = Item("sku-1", "title", 9.99, 3, False, b"\x00\xff", ["a", "b"], {"k": "v"},
            Dimensions(1.5, 2.0, 3.25), "fragile")


def round_trip(serializer: Serializer, value: Any) -> Any:
    outcome = serializer.decode_outcome(serializer.encode_outcome(Outcome(value=value)))
    assert outcome.error is None
    return outcome.value


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
@settings(max_examples=150)
@given(value=plain)
def test_plain_values_round_trip(serializer: Serializer, value: Any) -> None:
    assert round_trip(serializer, value) == value


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
@pytest.mark.parametrize("value", [
    User(1, "Ada", "ada@example.org"),
    ITEM,
    Item("s", "t", 1.0),  # defaults, no dimensions, no note
    Receipt("o-1", [ITEM, Item("x", "y", 2.0)], 12.5, {"sku-1": 4}),
    [User(1, "a", "b"), {"nested": User(2, "c", "d")}],
    2**100, -(2**63), 2**63 - 1,
], ids=repr)
def test_data_types_and_edge_values_round_trip(serializer: Serializer, value: Any) -> None:
    assert round_trip(serializer, value) == value


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
def test_invocation_round_trip(serializer: Serializer) -> None:
    inv = Invocation("ns/pkg.Api", "order", ([ITEM],), {"coupon": None, "express": True})
    back = serializer.decode_invocation(serializer.encode_invocation(inv))
    assert (back.address, back.method, list(back.args), dict(back.kwargs)) == (
        inv.address, inv.method, [[ITEM]], dict(inv.kwargs))


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
def test_error_outcome_round_trip(serializer: Serializer) -> None:
    info = ErrorInfo("builtins.KeyError", "'x'", ("x",), "Traceback ...")
    assert serializer.decode_outcome(serializer.encode_outcome(Outcome(error=info))).error == info
    # Arguments the serializer cannot carry are dropped, the message is kept.
    odd = ErrorInfo("pkg.Odd", "odd", (object(),), "")
    assert serializer.decode_outcome(serializer.encode_outcome(Outcome(error=odd))).error == \
        ErrorInfo("pkg.Odd", "odd", (), "")


def test_pickle_keeps_python_types_protobuf_documents_its_mapping() -> None:
    pickled, proto = SERIALIZERS
    assert round_trip(pickled, (1, {2, 3})) == (1, {2, 3})
    assert round_trip(proto, (1, 2)) == [1, 2]  # a tuple arrives as a list
    assert round_trip(proto, bytearray(b"ab")) == b"ab"


@pytest.mark.parametrize("value, message", [
    ({1, 2}, "builtins.set"),
    (object(), "builtins.object"),
    (complex(1, 2), "builtins.complex"),
])
def test_protobuf_type_checks_before_encoding(value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        ProtobufSerializer(REGISTRY).encode_outcome(Outcome(value=value))


def test_a_data_type_not_registered_by_the_interface_is_refused() -> None:
    only_users = TypeRegistry.of([api_spec(UserApi)])
    with pytest.raises(SerializationError, match="not a data type registered"):
        ProtobufSerializer(only_users).encode_outcome(Outcome(value=ITEM))
    # Pickle names the class, and find_class refuses a class the registry does not know.
    payload = PickleSerializer(REGISTRY).encode_outcome(Outcome(value=[ITEM]))
    with pytest.raises(SerializationError, match="global 'stages.v2_0.user_stub.types.Item' is forbidden"):
        PickleSerializer(only_users).decode_outcome(payload)


class Gadget:
    """Pickles as a call of ``func(*args)``: what every pickle exploit does."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


@pytest.mark.parametrize("make", [
    lambda p: Gadget(os.system, f"touch {p}"),
    lambda p: Gadget(subprocess.Popen, ["touch", str(p)]),
    lambda p: Gadget(eval, f"open({str(p)!r}, 'w')"),
    lambda p: Gadget(exec, f"open({str(p)!r}, 'w')"),
    lambda p: Gadget(__import__, "shutil"),
], ids=["os.system", "subprocess.Popen", "eval", "exec", "__import__"])
def test_hostile_pickles_are_refused_and_nothing_runs(make: Any, tmp_path: Any) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(("ns/Api", "m", (make(marker),), {}))
    with pytest.raises(SerializationError, match="is forbidden"):
        PickleSerializer(REGISTRY).decode_invocation(payload)
    assert not marker.exists()


def test_the_classic_hand_written_gadget_is_refused(tmp_path: Any) -> None:
    # Protocol 0 text: the opcode scan refuses it before the allow-list is even asked.
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(SerializationError, match=r"opcode GLOBAL \(0x63\) is not allowed"):
        PickleSerializer(REGISTRY).decode_outcome(payload)
    assert not marker.exists()


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
@settings(max_examples=300)
@given(junk=st.binary(max_size=200))
def test_random_bytes_raise_only_serialization_errors(serializer: Serializer, junk: bytes) -> None:
    for decode in (serializer.decode_invocation, serializer.decode_outcome):
        try:
            decode(junk)
        except SerializationError:
            pass


def test_pickle_refuses_well_formed_pickles_that_are_not_envelopes() -> None:
    for value in ([1, 2], ("a", "b", "c", "d"), ("a", "m", (), {1: 2})):
        with pytest.raises(SerializationError, match="not a request envelope"):
            PickleSerializer().decode_invocation(pickle.dumps(value))


def test_generated_protobuf_modules_are_not_stale() -> None:
    done = subprocess.run([sys.executable, "-m", "stages.v2_0.protos.generate", "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# -- data classes checked on arrival -------------------------------------------------------


def test_a_data_class_that_does_not_match_its_declaration_is_refused() -> None:
    pickle_ = PickleSerializer(REGISTRY)
    # Pickle rebuilds an instance without __init__, so the sender chooses its attributes: each
    # must be a declared field, of its declared type, wherever the instance sits in the value.
    odd = object.__new__(User)
    odd.__dict__.update(id="not an int", name="n", email="e")
    extra = User(1, "n", "e")
    object.__setattr__(extra, "cached", 42)
    short = object.__new__(User)
    short.__dict__.update(id=1, name="n")
    for value, message in ((odd, "User.id must be int, got str"),
                           (extra, "User must have exactly its declared fields; it has "
                                   "undeclared cached"),
                           (short, "it lacks email")):
        for payload in (pickle_.encode_outcome(Outcome(value=value)),
                        pickle_.encode_outcome(Outcome(value={"k": [value]}))):
            with pytest.raises(SerializationError, match=f"^pickle: .*{message}"):
                pickle_.decode_outcome(payload)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
def test_a_data_class_rule_is_checked_on_arrival_whichever_serializer(
        serializer: Serializer) -> None:
    # Item.__post_init__ refuses a negative quantity. A pickle skips __init__, protobuf calls it:
    # either way the receiver refuses the item, and says why.
    bad = object.__new__(Item)
    bad.__dict__.update(dataclasses.asdict(ITEM), quantity=-1, dimensions=ITEM.dimensions)
    if isinstance(serializer, PickleSerializer):
        payload = pickle.dumps(("ns/Api", "order", ([bad],), {}), 5)
    else:
        payload = serializer.encode_invocation(Invocation("ns/Api", "order", ([bad],), {}))
    with pytest.raises(SerializationError, match="quantity must be >= 0, got -1"):
        serializer.decode_invocation(payload)
    with pytest.raises(ValueError, match="quantity must be >= 0"):
        Item("s", "t", 1.0, quantity=-1)


@dataclass
class NoFields:
    pass


@dataclass(frozen=True)
class OneField:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("value must be >= 0")


def test_data_classes_of_any_number_of_fields_are_rebuilt_and_checked() -> None:
    # The edge cases are no field and one field; the rebuilt instance is then checked,
    # __post_init__ included, although pickle itself never runs __init__.
    registry = TypeRegistry({f"{__name__}.{c.__qualname__}": c for c in (NoFields, OneField)})
    pickle_ = PickleSerializer(registry)
    for value in (NoFields(), OneField(5)):
        back = pickle_.decode_outcome(pickle_.encode_outcome(Outcome(value=value))).value
        assert type(back) is type(value) and vars(back) == vars(value)
    bad = object.__new__(OneField)
    object.__setattr__(bad, "value", -5)
    with pytest.raises(SerializationError, match="invalid OneField: value must be >= 0"):
        pickle_.decode_outcome(pickle_.encode_outcome(Outcome(value=bad)))
