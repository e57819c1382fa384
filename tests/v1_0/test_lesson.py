"""What the v1.0 lesson (notebooks/01_v1_0_raw_socket.ipynb) takes for granted about the code.

The notebook prints parts of ``stages/v1_0`` (docstring tables, functions through
``inspect.getsource``) and its prose makes claims about the repository: that two layers do no
I/O, that the server answers any number of frames on a connection, that a later stage overrides a
given method. Those checks live here, asserted, rather than as tables at the top of the lesson; a
change that breaks one fails with a clear message before the notebook runs.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import pathlib
import re
import struct
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from support import run, until

import stages.v2_0 as v2_0
import stages.v2_1.server as v2_1_server
from stages.v1_0 import (
    Client,
    Frame,
    FrameCodec,
    FrameType,
    Server,
    ServerConfig,
    Status,
    UserService,
    dissect,
    encode_frame,
    encode_request,
    errors,
    messages,
    protocol,
)
from stages.v1_0.protocol import HEADER, HEADER_SIZE
from stages.v1_0.server import ServerConnection

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_v1_0_raw_socket.ipynb"

#: What the notebook's ``show_source(...)`` calls may name, and the object each name means.
SHOWN: dict[str, Callable[..., Any]] = {
    "FrameCodec.encode": FrameCodec.encode,
    "FrameCodec.feed": FrameCodec.feed,
    "FrameCodec.next_frame": FrameCodec.next_frame,
    "encode_request": encode_request,
    "Server.handle": Server.handle,
    "ServerConnection.data_received": ServerConnection.data_received,
    "ServerConnection._handle_frames": ServerConnection._handle_frames,
    "Client._exchange": Client._exchange,
}
#: A listing longer than this is not "the heart of the version" any more: split it or show less.
MAX_LISTING_LINES = 40


def cells(kind: str | None = None) -> list[dict[str, Any]]:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return [c for c in notebook["cells"] if kind is None or c["cell_type"] == kind]


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def lines_without_docstring(fn: Callable[..., Any]) -> list[str]:
    """The function's source lines, as the notebook prints them (docstring left out)."""
    text = textwrap.dedent(inspect.getsource(fn))
    lines = text.splitlines()
    node = ast.parse(text).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    if ast.get_docstring(node) is not None:
        first = node.body[0]
        assert first.end_lineno is not None
        del lines[first.lineno - 1 : first.end_lineno]
    return lines


# -- the docstrings the notebook prints -----------------------------------------------------------


def header_table_rows() -> list[tuple[int, str, str]]:
    """(offset, size, field) of each row of the byte table in protocol's docstring."""
    doc = protocol.__doc__ or ""
    table = doc[doc.index("    offset") : doc.index("Why each field")]
    rows = re.findall(r"^\s+(\d+)\s+(\d+|n)\s+(\S+(?: \S+)*)", table, flags=re.MULTILINE)
    return [(int(offset), size, field) for offset, size, field in rows]


def test_the_header_table_in_the_docstring_is_the_struct_the_codec_packs() -> None:
    rows = header_table_rows()
    sizes = [struct.calcsize("!" + code) for code in HEADER.format.lstrip("!")]
    assert [size for _, size, _ in rows[:-1]] == [str(s) for s in sizes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))] + [HEADER_SIZE]
    assert [offset for offset, _, _ in rows] == offsets
    assert rows[-1][1:] == ("n", "body")


def test_the_header_table_names_the_fields_dissect_explains() -> None:
    table_fields = [field for _, _, field in header_table_rows()]
    dissected = [row[2] for row in dissect(encode_frame(Frame(FrameType.REQUEST, 1, b"x")))]
    assert table_fields == dissected


def test_the_error_tree_the_notebook_prints_is_in_the_errors_docstring() -> None:
    doc = errors.__doc__ or ""
    tree = doc[doc.index("    RpcError") : doc.index("Later versions")]
    for name in ("RpcError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError",
                 "TransportError", "ConnectionClosedError", "RpcTimeoutError", "RemoteError",
                 "ConfigError"):
        assert re.search(rf"\b{name}\b", tree), name
        assert hasattr(errors, name), name


# -- the code the notebook lists ----------------------------------------------------------------


def test_every_listing_of_the_notebook_names_known_code() -> None:
    called = re.findall(r"show_source\(([^)]*)\)", "".join(source(c) for c in cells("code")))
    named = [name.strip() for call in called for name in call.split(",") if name.strip()]
    named = [n for n in named if n != "*functions"]  # the helper's own definition
    assert named, "the notebook lists no code"
    unknown = sorted(set(named) - set(SHOWN))
    assert not unknown, f"the notebook lists {unknown}: add them to SHOWN"


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_each_listing_fits_on_a_page(name: str) -> None:
    lines = lines_without_docstring(SHOWN[name])
    assert 3 <= len(lines) <= MAX_LISTING_LINES, f"{name} is {len(lines)} lines"


def test_the_codec_and_the_request_line_do_no_io() -> None:
    io_modules = {"asyncio", "socket", "selectors", "ssl", "threading", "subprocess"}
    for module in (protocol, messages):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & io_modules, f"{module.__name__} imports {imported & io_modules}"


# -- claims the prose makes ---------------------------------------------------------------------


def test_the_hypothesis_test_the_notebook_names_exists() -> None:
    text = (ROOT / "tests" / "v1_0" / "test_protocol.py").read_text(encoding="utf-8")
    assert "def test_any_chunking_gives_the_same_frames(" in text
    assert "@given(" in text


def test_later_stages_keep_what_the_notebook_says_they_keep() -> None:
    # "v2.1 overrides the same method" (make_connection); "v2.0 still opens a connection per call".
    assert "make_connection" in vars(v2_1_server.Server)
    assert v2_0.Client._exchange is Client._exchange


def test_the_v1_0_server_answers_many_frames_on_one_connection() -> None:
    # The benchmark's "one open connection" workload relies on it: only the v1.0 *client* opens
    # a connection per call.
    async def scenario() -> None:
        server = Server(ServerConfig())
        server.register("userService", UserService().methods())
        async with server:
            reader, writer = await asyncio.open_connection(*server.address)
            try:
                body = b"userService:getUser?id=123456"
                codec = FrameCodec()
                writer.write(b"".join(codec.encode(Frame(FrameType.REQUEST, i, body))
                                      for i in (1, 2, 3)))
                answers: list[Frame] = []
                while len(answers) < 3:
                    data = await reader.read(65536)
                    assert data, "the server closed the connection"
                    codec.feed(data)
                    answers.extend(codec.frames())
                assert [a.request_id for a in answers] == [1, 2, 3]
                assert all(a.status == Status.OK for a in answers)
                assert server.connection_count == 1
            finally:
                writer.close()
                await writer.wait_closed()
            await until(lambda: server.connection_count == 0, what="the connection closed")

    run(scenario)


# -- the notebook's own shape -------------------------------------------------------------------


def test_figures_are_numbered_in_order_each_with_a_caption_and_asserts() -> None:
    captions = [int(n) for c in cells("markdown")
                for n in re.findall(r"^\*\*Figure (\d+):\*\*", source(c), flags=re.MULTILINE)]
    assert captions == list(range(1, len(captions) + 1)) and captions
    all_cells = cells()
    plotting = [i for i, c in enumerate(all_cells) if c["cell_type"] == "code"
                and re.search(r"\b(plot_\w+|bench_figure)\(", source(c))]
    assert len(plotting) == len(captions)
    for number, i in enumerate(plotting, 1):
        text = source(all_cells[i])
        assert text.startswith("# NBVAL_IGNORE_OUTPUT"), f"figure {number}: output varies"
        assert f"Figure {number}:" in text, f"figure {number}: title"
        assert "assert" in text, f"figure {number}: nothing asserted on the plotted data"
        before = source(all_cells[i - 1])
        assert all_cells[i - 1]["cell_type"] == "markdown" and f"**Figure {number}:**" in before


def test_every_exercise_has_a_marked_reference_answer_and_a_check() -> None:
    code = cells("code")
    stubs = [i for i, c in enumerate(code)
             if "Reference answer: replace this with your own." in source(c)]
    assert 2 <= len(stubs) <= 3
    for i in stubs:
        check = source(code[i + 1])
        defined = re.search(r"^def (\w+)\(", source(code[i]), flags=re.MULTILINE)
        assert defined, source(code[i])
        assert f"{defined[1]}(" in check and "assert" in check


def test_the_notebook_stays_a_lesson_not_a_report() -> None:
    # Around 45 cells; and no table is shown before the learner has seen the code it is about.
    assert len(cells()) <= 48
    code = [source(c) for c in cells("code")]
    first_table = next(i for i, text in enumerate(code) if re.search(r"\bshow_table\(", text))
    first_listing = next(i for i, text in enumerate(code)
                         if re.search(r"(?<!def )\bshow_source\(", text))
    assert first_listing < first_table
