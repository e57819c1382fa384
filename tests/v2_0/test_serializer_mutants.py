"""Tests that kill the mutants of ``stages/v2_0/serializers.py`` which survived ``make mutate``.

Most of them lived in code that runs at import time (``@proto_type`` on the stub's classes), which
a mutation run never executes again; the others in error messages and branches no test reached:
a registry given a non-dataclass, remote exception names that are not built-in exceptions, the
limits a serializer is built with, and the names ``serializer_by_name`` lists.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass

import pytest

from stages.v2_0.api import rpc_api
from stages.v2_0.errors import ApiDefinitionError, ConfigError, SerializationError
from stages.v2_0.limits import DecodeLimits
from stages.v2_0.serializers import (
    Invocation,
    PickleSerializer,
    ProtobufSerializer,
    TypeRegistry,
    proto_type,
    serializer_by_name,
)
from stages.v2_0.user_stub import user_pb2

MESSAGE = user_pb2.User.DESCRIPTOR.full_name


def test_proto_type_pairs_a_data_class_with_its_message() -> None:
    @dataclass
    class Person:
        id: int
        name: str

    assert proto_type(user_pb2.User)(Person) is Person
    assert Person.__rpc_proto__ is user_pb2.User  # type: ignore[attr-defined]


def test_proto_type_refuses_what_is_not_a_data_class() -> None:
    class Plain:
        id: int

    with pytest.raises(ApiDefinitionError, match=r"^@proto_type needs a dataclass, got <class "):
        proto_type(user_pb2.User)(Plain)


def test_proto_type_names_every_field_the_message_lacks() -> None:
    @dataclass
    class Wider:
        id: int
        nickname: str
        age: int

    with pytest.raises(ApiDefinitionError) as refused:
        proto_type(user_pb2.User)(Wider)
    assert str(refused.value) == f"{MESSAGE} has no field for {Wider.__qualname__}.nickname, age"


def test_a_registry_refuses_an_api_declaring_a_type_that_is_not_a_data_class() -> None:
    class NotData:
        pass

    @rpc_api(namespace="mutants", types=(NotData,))
    class Api:
        def get(self) -> NotData: ...

    with pytest.raises(ApiDefinitionError, match=r"Api declares .*NotData.*, which is not a "
                                                 r"dataclass"):
        TypeRegistry().with_api(Api.__rpc_api__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["builtins.ValueError", "builtins.KeyError"])
def test_built_in_exceptions_are_rebuilt_as_themselves(name: str) -> None:
    assert TypeRegistry().exception_class(name).__name__ == name.split(".")[1]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", [
    "builtins.NoSuchError",      # not a name of builtins at all
    "builtins.len",              # a name of builtins, not a class
    "builtins.int",              # a class, not an exception
    "builtins.SystemExit",       # an exception that is not an error
    "builtins.x.ValueError",     # the module is "builtins.x", not "builtins"
])
def test_other_names_are_not_rebuilt(name: str) -> None:
    assert TypeRegistry().exception_class(name) is None


@pytest.mark.parametrize("cls", [PickleSerializer, ProtobufSerializer])
def test_a_serializer_decodes_within_the_limits_it_was_given(cls: type) -> None:
    nested = Invocation("a/b", "m", ([[[[1]]]],), {})
    payload = cls().encode_invocation(nested)
    assert cls().decode_invocation(payload).args == nested.args  # within the defaults
    strict = cls(limits=DecodeLimits(max_frame_size=1000, memory_budget=4000, max_depth=3))
    with pytest.raises(SerializationError, match="nested more than 3 levels deep"):
        strict.decode_invocation(payload)


def test_a_pickle_that_is_not_a_request_envelope_is_refused_by_name() -> None:
    with pytest.raises(SerializationError) as refused:
        PickleSerializer().decode_invocation(pickle.dumps(("only", "three", ()), 5))
    assert str(refused.value) == "pickle: not a request envelope"


def test_an_unknown_serializer_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        serializer_by_name("json")
    assert re.fullmatch(r"unknown serializer 'json' \(known: \w+, \w+\)", str(refused.value))
    assert "pickle, protobuf" in str(refused.value) or "protobuf, pickle" in str(refused.value)
