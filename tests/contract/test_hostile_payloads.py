"""Small payloads that ask a server for a lot: each is refused for its own call, costs the server
little memory, and leaves the connection and the server serving everyone else.

Every payload here is a few bytes to a megabyte. Without the limits of ``stages.v2_0.limits`` and
``stages.v2_0.pickle_scan`` each one makes a v2.0 or v2.1 server allocate hundreds of megabytes
to a gigabyte, or walk a value for ever. The test runs a real server process, sends the payload
on a raw connection, expects BAD_REQUEST for that request id, then a normal call on the same
connection (where the server keeps it open) and on a new one, and reads the server's peak memory
(``VmHWM``) from ``/proc``.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from stages.harness.process import ServerProcess
from stages.v1_0.protocol import Frame, FrameCodec, FrameType, encode_frame
from stages.v2_0.api import address_of
from stages.v2_0.errors import Status
from stages.v2_0.protos import rpc_envelope_pb2 as pb
from stages.v2_0.serializers import Invocation, PickleSerializer, ProtobufSerializer
from stages.v2_0.user_stub import InventoryApi, Item, UserApi

STAGES = ["v2_0", "v2_1"]
#: The bound on the server's peak memory growth over the whole test (all payloads together).
#: Unprotected, the smallest of these payloads costs the server 200 MiB or more.
PEAK_GROWTH_BOUND_MIB = 48

ECHO = address_of(InventoryApi)


def pickle_request(argument_opcodes: bytes) -> bytes:
    """The body of an ``InventoryApi.echo(<argument>)`` call whose argument is raw opcodes.

    The envelope is ``(address, "echo", (argument,), {})``: MARK, the two strings, the argument,
    TUPLE1, EMPTY_DICT, TUPLE, STOP.
    """
    address, method = ECHO.encode(), b"echo"
    return (b"\x80\x05(" + b"\x8c" + bytes([len(address)]) + address
            + b"\x8c" + bytes([len(method)]) + method
            + argument_opcodes + b"\x85}t.")


def nested_shared_lists(levels: int) -> bytes:
    # a = [1]; then `levels` times: a = [a, a]. A few bytes per level; 2**levels leaves as a tree.
    ops = b"]K\x01a\x940"  # EMPTY_LIST, 1, APPEND, MEMOIZE (as 0), POP
    for level in range(levels):
        # EMPTY_LIST, BINGET level, APPEND, BINGET level, APPEND, MEMOIZE (as level + 1), POP
        ops += b"]h" + bytes([level]) + b"ah" + bytes([level]) + b"a\x940"
    return ops + b"h" + bytes([levels])


PICKLE_BOMBS = {
    # LONG_BINPUT 50,000,000: the unpickler would grow its memo to 100 M slots (800 MB).
    "memo slot far ahead": b"N" + b"r" + struct.pack("<I", 50_000_000),
    # A million EMPTY_SETs in one list: 1 MB of pickle, 216 MB of sets.
    "a million empty sets": b"(" + b"\x8f" * 1_000_000 + b"l",
    # bytearray(2**30) through REDUCE: a gigabyte from a constructor's argument.
    "bytearray(2**30)": (b"\x8c\x08builtins\x8c\tbytearray\x93"
                         + b"J" + struct.pack("<i", 2**30) + b"\x85R"),
    # 40 levels of a list holding the same list twice: 2**40 items when walked.
    "shared references": nested_shared_lists(40),
    # An integer of 100,000 bytes (240,000 decimal digits).
    "huge integer": b"\x8b" + struct.pack("<i", 100_000) + b"\x01" * 100_000,
    # 100,000 nested lists.
    "deep nesting": b"]" * 100_000 + b"a" * 99_999,
}


def protobuf_request(*values: pb.Value) -> bytes:
    msg = pb.Request(address=ECHO, method="echo")
    for value in values:
        msg.args.add().CopyFrom(value)
    return msg.SerializeToString()


def _corrupt_any() -> pb.Value:
    value = pb.Value()
    value.message.type_url = f"type.googleapis.com/{Item.__rpc_proto__.DESCRIPTOR.full_name}"
    value.message.value = b"\xff\xff\xff\xff"  # not a valid Item
    return value


def _big_int() -> pb.Value:
    value = pb.Value()
    value.big_int = "9" * 100_000
    return value


PROTOBUF_BOMBS = {
    "corrupt Any": protobuf_request(_corrupt_any()),
    "integer of 100,000 digits": protobuf_request(_big_int()),
    "invalid wire type": b"\x0a\x05hello\x0f",
}


def good_call(request_id: int) -> Frame:
    body = PickleSerializer().encode_invocation(Invocation(address_of(UserApi), "get_user", (7,)))
    return Frame(FrameType.REQUEST, request_id, body, codec=PickleSerializer.serializer_id)


async def send(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
               frame: Frame) -> Frame:
    writer.write(encode_frame(frame))
    codec = FrameCodec()
    while True:
        data = await reader.read(65536)
        assert data, "the server closed the connection instead of answering"
        codec.feed(data)
        for answer in codec.frames():
            if answer.type == FrameType.RESPONSE:
                return answer


def peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.parametrize("stage", STAGES)
def test_small_payloads_that_ask_for_a_lot_are_refused_cheaply(stage: str) -> None:
    bodies = [(name, body, PickleSerializer.serializer_id)
              for name, body in ((n, pickle_request(ops)) for n, ops in PICKLE_BOMBS.items())]
    bodies += [(name, body, ProtobufSerializer.serializer_id)
               for name, body in PROTOBUF_BOMBS.items()]

    async def scenario(host: str, port: int) -> list[tuple[str, str]]:
        reader, writer = await asyncio.open_connection(host, port)
        answers = []
        for number, (name, body, codec) in enumerate(bodies):
            rid = 100 + 2 * number
            answer = await send(writer, reader, Frame(FrameType.REQUEST, rid, body, codec=codec))
            message = answer.body.decode("utf-8", "replace")
            assert (answer.request_id, answer.status) == (rid, Status.BAD_REQUEST), (name, message)
            assert len(message) < 1000, (name, len(message))
            answers.append((name, message))
            # The same connection still serves a normal call...
            normal = await send(writer, reader, good_call(rid + 1))
            assert (normal.request_id, normal.status) == (rid + 1, Status.OK), name
        writer.close()
        await writer.wait_closed()
        # ...and so does a new one.
        reader, writer = await asyncio.open_connection(host, port)
        assert (await send(writer, reader, good_call(1))).status == Status.OK
        writer.close()
        await writer.wait_closed()
        return answers

    with ServerProcess(f"stages.{stage}") as proc:
        before = peak_mib(proc.pid)
        answers = asyncio.run(asyncio.wait_for(scenario(proc.host, proc.port), 60))
        growth = peak_mib(proc.pid) - before
    assert growth < PEAK_GROWTH_BOUND_MIB, (growth, answers)
    said = dict(answers)
    assert "memo slot 50000000 written out of order" in said["memo slot far ahead"]
    assert "would build more than" in said["a million empty sets"]
    assert "global 'builtins.bytearray' is forbidden" in said["bytearray(2**30)"]
    assert "shared parts are counted" in said["shared references"]
    assert "integer of 100000 bytes" in said["huge integer"]
    assert "nested more than 64 levels" in said["deep nesting"]
    assert said["corrupt Any"].startswith("protobuf")
    assert "100000 digits" in said["integer of 100,000 digits"]
    assert said["invalid wire type"].startswith("protobuf")


@pytest.mark.parametrize("stage", STAGES)
def test_a_huge_method_name_gets_a_short_answer(stage: str) -> None:
    body = PickleSerializer().encode_invocation(Invocation(address_of(UserApi), "x" * 5_000_000))

    async def scenario(host: str, port: int) -> Frame:
        reader, writer = await asyncio.open_connection(host, port)
        answer = await send(writer, reader, Frame(FrameType.REQUEST, 9, body, codec=2))
        writer.close()
        await writer.wait_closed()
        return answer

    with ServerProcess(f"stages.{stage}") as proc:
        answer = asyncio.run(asyncio.wait_for(scenario(proc.host, proc.port), 30))
    assert answer.request_id == 9 and answer.status == Status.NOT_FOUND
    # The answer is in the request's serializer: decode it and look at the message.
    outcome = PickleSerializer().decode_outcome(answer.body)
    assert outcome.error is not None and len(outcome.error.message) < 400
    assert "more characters" in outcome.error.message


def test_v1_0_answers_huge_names_and_values_with_short_messages() -> None:
    requests = {
        "service name": ("s" * 1_000_000 + ":getUser?id=1", Status.NOT_FOUND),
        "method name": ("userService:" + "m" * 1_000_000, Status.NOT_FOUND),
        "parameter name": ("userService:getUser?" + "p" * 1_000_000 + "=1", Status.BAD_REQUEST),
        "parameter value": ("userService:getUser?id=" + "9" * 1_000_000, Status.INTERNAL),
    }

    async def scenario(host: str, port: int) -> dict[str, Frame]:
        answers = {}
        for number, (name, (line, _)) in enumerate(requests.items()):
            reader, writer = await asyncio.open_connection(host, port)
            answers[name] = await send(writer, reader, Frame(FrameType.REQUEST, number + 1,
                                                             line.encode()))
            writer.close()
            await writer.wait_closed()
        return answers

    with ServerProcess("stages.v1_0") as proc:
        answers = asyncio.run(asyncio.wait_for(scenario(proc.host, proc.port), 30))
    for name, (_, status) in requests.items():
        answer = answers[name]
        assert answer.status == status, (name, answer)
        assert len(answer.body) < 2500, (name, len(answer.body))
