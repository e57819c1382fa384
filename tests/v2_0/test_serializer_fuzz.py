"""Fuzzing the serializers and the server's dispatch with properties.

"Nothing but SerializationError escapes" is the least a decoder owes. These say more: whatever a
decoder accepts is a well-formed envelope that survives another round trip unchanged; whatever it
refuses is refused with a message; and a server answers any body at all
with a response to the same request id that carries a status.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.v1_0.protocol import Frame, FrameType
from stages.v2_0 import (
    Invocation,
    Outcome,
    PickleSerializer,
    ProtobufSerializer,
    SerializationError,
    Serializer,
    ServerConfig,
    Status,
    TypeRegistry,
    api_spec,
)
from stages.v2_0.provider import InventoryApiImpl, UserApiImpl
from stages.v2_0.serializers import ErrorInfo
from stages.v2_0.server import Server
from stages.v2_0.user_stub import InventoryApi, UserApi

REGISTRY = TypeRegistry.of([api_spec(UserApi), api_spec(InventoryApi)])
SERIALIZERS = [PickleSerializer(REGISTRY), ProtobufSerializer(REGISTRY)]
ids = [s.name for s in SERIALIZERS]


def same(a: Any, b: Any) -> bool:
    """Equality that also holds for NaN in the same place (random bytes make NaNs)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def valid_bodies(serializer: Serializer) -> st.SearchStrategy[bytes]:
    """Real envelopes, then damaged: a byte changed, cut short, or extended."""
    values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                          | st.binary(max_size=8), lambda c: st.lists(c, max_size=3), max_leaves=6)
    invocations = st.builds(lambda a, m, args: serializer.encode_invocation(
        Invocation(a, m, tuple(args), {})), st.text(max_size=10), st.text(max_size=10),
        st.lists(values, max_size=3))
    outcomes = values.map(lambda v: serializer.encode_outcome(Outcome(value=v)))
    bodies = invocations | outcomes

    def damage(body: bytes, where: int, byte: int, how: int) -> bytes:
        if not body:
            return bytes([byte])
        where %= len(body)
        return [body[:where] + bytes([byte]) + body[where + 1:], body[:where],
                body + bytes([byte])][how]

    return st.builds(damage, bodies, st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2))


def bodies_for(serializer: Serializer) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=200) | valid_bodies(serializer)


def check_refusal(serializer: Serializer, exc: SerializationError) -> None:
    assert type(exc) is SerializationError and str(exc)  # a reason, not a bare class


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
@settings(max_examples=150)
@given(data=st.data())
def test_a_decoded_invocation_is_well_formed_and_round_trips(serializer: Serializer,
                                                             data: st.DataObject) -> None:
    body = data.draw(bodies_for(serializer))
    try:
        inv = serializer.decode_invocation(body)
    except SerializationError as exc:
        check_refusal(serializer, exc)
        return
    assert isinstance(inv, Invocation)
    assert type(inv.address) is str and type(inv.method) is str
    assert type(inv.args) is tuple and all(type(k) is str for k in inv.kwargs)
    again = serializer.decode_invocation(serializer.encode_invocation(inv))
    assert (again.address, again.method) == (inv.address, inv.method)
    assert same(list(again.args), list(inv.args)) and same(dict(again.kwargs), dict(inv.kwargs))


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=ids)
@settings(max_examples=150)
@given(data=st.data())
def test_a_decoded_outcome_is_well_formed_and_round_trips(serializer: Serializer,
                                                          data: st.DataObject) -> None:
    body = data.draw(bodies_for(serializer))
    try:
        outcome = serializer.decode_outcome(body)
    except SerializationError as exc:
        check_refusal(serializer, exc)
        return
    assert isinstance(outcome, Outcome)
    if outcome.error is not None:
        error = outcome.error
        assert isinstance(error, ErrorInfo) and outcome.value is None
        assert type(error.type) is str and type(error.message) is str
        assert type(error.args) is tuple and type(error.traceback) is str
    again = serializer.decode_outcome(serializer.encode_outcome(outcome))
    assert same(again.value, outcome.value)
    assert (again.error is None) == (outcome.error is None)
    if outcome.error is not None and again.error is not None:
        assert again.error[:2] == outcome.error[:2] and again.error.traceback == outcome.error.traceback


SERVER = Server(ServerConfig())
SERVER.bind(UserApi, UserApiImpl())
SERVER.bind(InventoryApi, InventoryApiImpl())


@settings(max_examples=150)
@given(codec=st.sampled_from([0, 1, 2, 3, 255]), request_id=st.integers(0, 2**32 - 1),
       data=st.data())
def test_the_server_answers_any_body_with_a_status_and_the_same_request_id(
        codec: int, request_id: int, data: st.DataObject) -> None:
    serializer = {1: SERIALIZERS[1], 2: SERIALIZERS[0]}.get(codec, SERIALIZERS[0])
    body = data.draw(bodies_for(serializer))
    answer = SERVER.handle(Frame(FrameType.REQUEST, request_id, body, codec))
    assert answer.type == FrameType.RESPONSE and answer.request_id == request_id
    status = Status(answer.status)
    assert answer.codec in (0, codec)
    if answer.codec == 0:  # refused before the call was decoded: plain text that says why
        assert status in (Status.BAD_REQUEST, Status.NOT_FOUND) and answer.body.decode()
    else:  # decoded: the outcome in the request's own serializer
        outcome = serializer.decode_outcome(answer.body)
        assert (status == Status.OK) == (outcome.error is None)
        if outcome.error is not None:
            assert outcome.error.message


def test_a_valid_body_reaches_its_method_and_an_unbound_address_is_not_found() -> None:
    # The property above would pass vacuously if every body were refused: show that a valid
    # body does reach a method, and that a well-formed call to no bound API is NOT_FOUND.
    for serializer in SERIALIZERS:
        ok = SERVER.handle(Frame(FrameType.REQUEST, 9, serializer.encode_invocation(
            Invocation(api_spec(InventoryApi).address, "echo", ([1, "x"],))),
            serializer.serializer_id))
        assert ok.status == Status.OK
        assert serializer.decode_outcome(ok.body).value == [1, "x"]
        missing = SERVER.handle(Frame(FrameType.REQUEST, 10, serializer.encode_invocation(
            Invocation("nobody/Api", "echo", ())), serializer.serializer_id))
        assert missing.status == Status.NOT_FOUND
