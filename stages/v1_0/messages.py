"""What v1.0 puts *inside* a frame: a readable request line and a readable answer.

The request names the service, the method and the parameters, in the spirit of a URL::

    userService:getUser?id=123456

and the answer is the result's fields in the same query-string form::

    id=123456&name=Alan+Turing&email=alan.123456%40example.org

Both are plain UTF-8 text, so a learner can read them in a hex dump. Parameters are strings: the
text format has no types, which is exactly the limitation v2.0's serializers remove.

Like the frame codec, this module does no I/O: bytes in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode

from stages.v1_0.errors import RemoteProtocolError, Status, clip

__all__ = ["TEXT_CODEC", "Request", "encode_request", "decode_request", "encode_result", "decode_result"]

#: The frame header's codec byte for this text format (v2.0 adds real serializers).
TEXT_CODEC: Final = 0
#: Service and method names are identifiers. A method starting with "_" is never callable.
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
#: More parameters than this is not a request, it is an attack on the parser.
MAX_PARAMS: Final = 256


@dataclass(frozen=True)
class Request:
    """A parsed request line: ``service:method?param=value&...``."""

    service: str
    method: str
    params: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return encode_request(self).decode("utf-8")


def encode_request(request: Request) -> bytes:
    """Render a request as its request line.

    Raises:
        ValueError: the service or method is not a valid name.
    """
    for kind, name in (("service", request.service), ("method", request.method)):
        if not _NAME.match(name):
            raise ValueError(f"invalid {kind} name {name!r}")
    line = f"{request.service}:{request.method}"
    if request.params:
        line += "?" + urlencode({k: str(v) for k, v in request.params.items()})
    return line.encode("utf-8")


def decode_request(body: bytes) -> Request:
    """Parse a request line.

    Raises:
        RemoteProtocolError: with status BAD_REQUEST, saying what is wrong with the line
            (not UTF-8, no ``service:method``, a bad name, a malformed or repeated parameter).
    """
    try:
        line = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"request is not UTF-8 text: {exc}") from None
    target, _, query = line.partition("?")
    service, sep, method = target.partition(":")
    if not sep:
        raise _bad(f"malformed request line {line[:80]!r}: expected 'service:method?params'")
    if not _NAME.match(service):
        raise _bad(f"invalid service name {service[:80]!r}")
    if not _NAME.match(method):
        raise _bad(f"invalid method name {method[:80]!r}")
    params = _parse_query(query, what="request parameters") if query else {}
    return Request(service, method, params)


def encode_result(result: Mapping[str, object]) -> bytes:
    """Render a result's fields as a query string."""
    return urlencode({str(k): str(v) for k, v in result.items()}).encode("utf-8")


def decode_result(body: bytes) -> dict[str, str]:
    """Parse the body of a successful response back into its fields.

    Raises:
        RemoteProtocolError: the body is not a well-formed query string.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"response is not UTF-8 text: {exc}") from None
    return _parse_query(text, what="response") if text else {}


def _parse_query(query: str, *, what: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_PARAMS
        )
    except ValueError as exc:
        raise _bad(clip(f"malformed {what} {query[:80]!r}: {exc}")) from None
    result: dict[str, str] = {}
    for key, value in pairs:
        if key in result:
            raise _bad(f"parameter {clip(repr(key))} given twice in {what}")
        result[key] = value
    return result


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, Status.BAD_REQUEST)
