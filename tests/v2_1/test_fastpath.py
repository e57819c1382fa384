"""v2.1's hot path keeps the behaviour of what it replaces (stages.v2_1.fastpath).

Each step is checked against the plain piece of v1.0/v2.0: the quick argument check accepts and
refuses exactly what ``Signature.bind`` does, with the same message; pickle records decode to what
standard pickle decodes to and are refused where a standard pickle of the same value would be
(undeclared or missing fields, wrong types, a data class's own rules), plus the ways a record
itself can be malformed; and on the wire, a v2.1 client gets records while a v2.0 client of the
same v2.1 server gets standard pickle.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import run

from stages.v2_0 import client as v2_0_client
from stages.v2_0.api import MethodSpec, api_spec
from stages.v2_0.errors import SerializationError
from stages.v2_0.provider import UserApiImpl
from stages.v2_0.serializers import Outcome, PickleSerializer, TypeRegistry
from stages.v2_0.user_stub import Dimensions, InventoryApi, Item, User, UserApi
from stages.v2_1 import Client, Server, ServerConfig
from stages.v2_1.fastpath import QuickMethodSpec, RecordPickleSerializer, faster, quick_spec

REGISTRY = TypeRegistry.of([api_spec(UserApi), api_spec(InventoryApi)])
PLAIN = PickleSerializer(REGISTRY)
RECORDS = RecordPickleSerializer(REGISTRY)
ITEM = Item("sku-1", "title", 9.99, 3, False, b"\x00\xff", ["a", "b"], {"k": "v"},
            Dimensions(1.5, 2.0, 3.25), "fragile")


# -- the quick argument check ------------------------------------------------------------------

P = inspect.Parameter
KINDS = [P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL, P.KEYWORD_ONLY,
         P.VAR_KEYWORD]


@st.composite
def signatures(draw: st.DrawFn) -> inspect.Signature:
    """A valid signature: parameters in an order Python allows, defaults where it allows them."""
    kinds = sorted(draw(st.lists(st.sampled_from(KINDS), max_size=6)), key=KINDS.index)
    kinds = [k for i, k in enumerate(kinds)
             if k not in (P.VAR_POSITIONAL, P.VAR_KEYWORD) or k not in kinds[:i]]
    params, defaulted = [], False
    for i, kind in enumerate(kinds):
        default: Any = P.empty
        if kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
            if defaulted or draw(st.booleans()):
                defaulted, default = True, i
        elif kind == P.KEYWORD_ONLY and draw(st.booleans()):
            default = i
        params.append(P(f"p{i}", kind, default=default))
    return inspect.Signature(params)


def outcome(check: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    try:
        check(args, kwargs)
    except TypeError as exc:
        return str(exc)
    return "ok"


@settings(max_examples=400)
@given(signature=signatures(), count=st.integers(0, 7),
       keywords=st.lists(st.sampled_from([f"p{i}" for i in range(7)] + ["other"]), max_size=3,
                         unique=True))
def test_the_quick_check_accepts_and_refuses_what_signature_bind_does(
        signature: inspect.Signature, count: int, keywords: list[str]) -> None:
    plain, quick = MethodSpec("m", signature), QuickMethodSpec("m", signature)
    args, kwargs = tuple(range(count)), dict.fromkeys(keywords, 0)
    assert outcome(quick.check_arguments, args, kwargs) == outcome(plain.check_arguments, args,
                                                                   kwargs)


def test_the_quick_check_applies_only_to_simple_signatures() -> None:
    def simple(a: int, b: int = 0, *, c: int = 0) -> None: ...
    def star(a: int, *rest: int) -> None: ...
    def keyword_needed(a: int, *, b: int) -> None: ...
    ranges = {f.__name__: QuickMethodSpec("m", inspect.signature(f)).positional
              for f in (simple, star, keyword_needed)}
    assert ranges == {"simple": (1, 2), "star": None, "keyword_needed": None}


def test_quick_spec_changes_only_the_argument_check() -> None:
    spec = api_spec(InventoryApi)
    quick = quick_spec(spec)
    assert all(type(m) is QuickMethodSpec for m in quick.methods.values())
    assert [(m.name, m.signature) for m in quick.methods.values()] == \
        [(m.name, m.signature) for m in spec.methods.values()]
    assert dataclasses.replace(quick, methods=spec.methods) == spec


# -- pickle records ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [User(1, "Ada", "ada@example.org"), ITEM, Dimensions(1, 2, 3),
                                   [User(1, "a", "b")], None, 42, {"k": ITEM}])
def test_records_decode_to_what_standard_pickle_decodes_to(value: Any) -> None:
    via_records = RECORDS.decode_outcome(RECORDS.encode_outcome(Outcome(value)))
    via_pickle = PLAIN.decode_outcome(PLAIN.encode_outcome(Outcome(value)))
    assert via_records == via_pickle == Outcome(value)
    assert type(via_records.value) is type(value)


def test_a_data_class_answer_travels_as_a_record_and_is_shorter() -> None:
    user = User(123456, "Alan Turing", "alan.123456@example.org")
    record = RECORDS.encode_outcome(Outcome(user))
    standard = PLAIN.encode_outcome(Outcome(user))
    assert pickle.loads(record) == ("stages.v2_0.user_stub.types.User(id,name,email)",
                                    (123456, "Alan Turing", "alan.123456@example.org"))
    assert len(record) < len(standard)
    # Both decode either form: the records serializer reads standard pickle too.
    assert RECORDS.decode_outcome(standard) == PLAIN.decode_outcome(standard)


def test_an_instance_holding_more_than_its_fields_is_pickled_whole_and_refused() -> None:
    extra = User(1, "n", "e")
    object.__setattr__(extra, "cached", 42)
    payload = RECORDS.encode_outcome(Outcome(extra))
    assert pickle.loads(payload)[0] is True  # the standard envelope, not a record
    with pytest.raises(SerializationError, match="undeclared cached"):
        RECORDS.decode_outcome(payload)


def record(name: str, values: Any) -> bytes:
    return pickle.dumps((name, values), 5)


USER = "stages.v2_0.user_stub.types.User"


@pytest.mark.parametrize("payload, message", [
    (record(f"{USER}(id,name,email)", (1, "n")), "needs 3 values"),
    (record(f"{USER}(id,name,email)", [1, "n", "e"]), "needs 3 values"),
    (record(f"{USER}(id,name,email)", ("1", "n", "e")), "User.id must be int, got str"),
    (record(f"{USER}(id,name)", (1, "n")), "it lacks email"),
    (record(f"{USER}(id,name,email,admin)", (1, "n", "e", True)), "undeclared admin"),
    (record(f"{USER}(id,id,email)", (1, 2, "e")), "bad field names"),
    (record(f"{USER}(id,__class__,email)", (1, int, "e")), "forbidden|may not travel"),
    (record(f"{USER}(id,na me,email)", (1, "n", "e")), "bad field names"),
    (record("os.system(command)", ("true",)), "not a record of a registered data class"),
    (record("builtins.dict(x)", (1,)), "not a record of a registered data class"),
    (record(USER, (1, "n", "e")), "not a record of a registered data class"),
    (record("x" * 100_000, ()), "not a record of a registered data class"),
])
def test_malformed_and_hostile_records_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match=message) as caught:
        RECORDS.decode_outcome(payload)
    assert str(caught.value).startswith("pickle")
    assert len(str(caught.value)) < 400  # a long name is quoted clipped


def test_a_record_keeps_the_data_class_rules() -> None:
    item = dataclasses.asdict(ITEM) | {"quantity": -1, "dimensions": ITEM.dimensions}
    fields = ",".join(item)
    payload = record(f"stages.v2_0.user_stub.types.Item({fields})", tuple(item.values()))
    with pytest.raises(SerializationError, match="quantity must be >= 0, got -1"):
        RECORDS.decode_outcome(payload)


def test_a_record_from_another_version_of_the_stub_lands_on_the_named_fields() -> None:
    # The sender's User lists its fields in another order: each value lands on its own name.
    payload = record(f"{USER}(email,id,name)", ("e@x", 7, "Grace"))
    assert RECORDS.decode_outcome(payload).value == User(7, "Grace", "e@x")


@dataclass
class Slotted:
    __slots__ = ("value",)
    value: int


def test_classes_that_pickle_their_own_way_are_not_records() -> None:
    registry = TypeRegistry({f"{__name__}.Slotted": Slotted})
    records = RecordPickleSerializer(registry)
    payload = records.encode_outcome(Outcome(Slotted(3)))
    assert pickle.loads(payload)[0] is True
    assert records.decode_outcome(payload).value.value == 3


def test_the_bound_unpickler_refuses_what_the_allow_list_refuses() -> None:
    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("ran",))

    payload = pickle.dumps((True, Evil()), 5)
    for serializer in (PLAIN, RECORDS):
        with pytest.raises(SerializationError, match="forbidden"):
            serializer.decode_outcome(payload)


def test_faster_swaps_only_the_plain_pickle_serializer() -> None:
    swapped = faster(PLAIN)
    assert type(swapped) is RecordPickleSerializer and swapped.serializer_id == 3
    assert swapped.registry is PLAIN.registry and swapped.limits is PLAIN.limits
    assert faster(RECORDS) is RECORDS


# -- on the wire -------------------------------------------------------------------------------


def test_a_v2_1_server_answers_v2_1_clients_in_records_and_v2_0_clients_in_pickle() -> None:
    async def scenario() -> None:
        server = Server(ServerConfig())
        server.bind(UserApi, UserApiImpl(), inline=True)
        async with server:
            seen: dict[str, tuple[int, bytes]] = {}

            async def record_answers(client: Any, exchanging: Any, name: str) -> User:
                """One call, recording the codec and body of its answer frame as it passes
                ``exchanging.exchange`` (the v2.0 client's own; the v2.1 client's endpoint's)."""
                exchange = exchanging.exchange

                async def recording(request: Any, timeout: Any = None) -> Any:
                    frame = await exchange(request, timeout)
                    seen[name] = (frame.codec, frame.body)
                    return frame

                exchanging.exchange = recording
                return await client.async_proxy(UserApi).get_user(123456)

            new = Client(*server.address)
            old = v2_0_client.Client(*server.address)
            try:
                assert await record_answers(new, new.endpoint, "v2.1") == \
                    await record_answers(old, old, "v2.0")
            finally:
                await new.aclose()
        assert seen["v2.1"][0] == 3 and type(pickle.loads(seen["v2.1"][1])[0]) is str
        assert seen["v2.0"][0] == 2 and pickle.loads(seen["v2.0"][1])[0] is True

    run(scenario)
