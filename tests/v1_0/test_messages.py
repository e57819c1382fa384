"""The v1.0 request line and answer format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.v1_0.errors import RemoteProtocolError, Status
from stages.v1_0.messages import (
    Request,
    decode_request,
    decode_result,
    encode_request,
    encode_result,
)


def test_the_original_request_line() -> None:
    req = decode_request(b"userService:getUser?id=123456")
    assert req == Request("userService", "getUser", {"id": "123456"})
    assert encode_request(req) == b"userService:getUser?id=123456"


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=5))
def test_params_round_trip_whatever_characters_they_hold(params: dict[str, str]) -> None:
    req = Request("svc", "m", params)
    assert decode_request(encode_request(req)) == req
    assert decode_result(encode_result(params)) == params


@pytest.mark.parametrize(
    "line, message",
    [
        (b"userService", "expected 'service:method"),
        (b":getUser", "invalid service name"),
        (b"userService:_secret", "invalid method name"),
        (b"userService:__class__", "invalid method name"),
        (b"user-service:getUser", "invalid service name"),
        (b"userService:getUser?id=1&id=2", "given twice"),
        (b"userService:getUser?=&&", "malformed request parameters"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_lines_are_bad_requests(line: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        decode_request(line)
    assert info.value.status == Status.BAD_REQUEST


def test_too_many_parameters_are_refused() -> None:
    line = "s:m?" + "&".join(f"p{i}=1" for i in range(1000))
    with pytest.raises(RemoteProtocolError):
        decode_request(line.encode())


def test_encode_refuses_invalid_names() -> None:
    with pytest.raises(ValueError):
        encode_request(Request("svc", "no spaces"))
