"""How v2.0 is built from v1.0: the facts notebook 02 relies on, checked here instead of shown there.

The notebook opens with a short table of modules (new, extending v1.0's, imported unchanged,
dropped) and the two classes' method resolution order. What stands behind those words is
asserted here: which objects v2.0 takes from v1.0 as they are, which classes it subclasses,
which methods it inherits and which it overrides. A change to either stage that breaks one of
these facts breaks the lesson, and fails here with a message saying which.
"""

from __future__ import annotations

import ast
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import stages.v1_0 as v1_0
import stages.v2_0 as v2_0
from stages.v1_0 import cli as v1_0_cli
from stages.v1_0 import errors as v1_0_errors
from stages.v1_0 import server as v1_0_server
from stages.v2_0 import cli as v2_0_cli
from stages.v2_0 import errors as v2_0_errors
from stages.v2_0 import server as v2_0_server
from stages.v2_0.client import make_proxy_class
from stages.v2_0.user_stub import InventoryApi, UserApi

ROOT = Path(__file__).resolve().parents[2]
V2_0_DIR = ROOT / "stages" / "v2_0"
NOTEBOOK = ROOT / "notebooks" / "02_v2_0_interface_proxy.ipynb"


def modules(package: ModuleType) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"}


def v1_0_modules_imported_by_v2_0() -> set[str]:
    """Every v1.0 module that some file of stages/v2_0 imports (``from stages.v1_0.x import``
    or ``from stages.v1_0 import x``)."""
    found: set[str] = set()
    for path in V2_0_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages.v1_0"):
                parts = node.module.split(".")  # type: ignore[union-attr]
                found.update(parts[2:3] or [alias.name for alias in node.names])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[2] for alias in node.names
                             if alias.name.startswith("stages.v1_0."))
    return found


def own_functions(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items()
            if inspect.isfunction(value) or isinstance(value, (property, staticmethod, classmethod))}


# -- the module table ------------------------------------------------------------------------


def test_module_table_new_extended_imported_and_dropped() -> None:
    v1, v2 = modules(v1_0), modules(v2_0)
    assert v2 - v1 == {"api", "serializers", "limits", "pickle_scan", "protos", "user_stub",
                       "provider", "consumer", "server_demo", "client_demo"}
    assert v1 & v2 == {"server", "client", "config", "errors", "cli"}
    assert v1 - v2 == {"protocol", "messages", "service"}
    imported = v1_0_modules_imported_by_v2_0()
    # "extends v1.0's": each module of the same name imports the v1.0 one to build on it.
    assert v1 & v2 <= imported
    # "imported unchanged": the frame codec; "dropped": the request line and the demo service.
    assert "protocol" in imported
    assert not {"messages", "service"} & imported


def test_the_frame_codec_and_connection_handling_are_v1_0s_objects() -> None:
    assert v2_0.Frame is v1_0.Frame
    assert v2_0.FrameCodec is v1_0.FrameCodec
    assert v2_0.FrameType is v1_0.FrameType
    assert v2_0.PROTOCOL_VERSION == v1_0.PROTOCOL_VERSION
    assert v2_0_server.ServerConnection is v1_0_server.ServerConnection


def test_extended_modules_subclass_or_reexport_v1_0s() -> None:
    assert issubclass(v2_0.Server, v1_0.Server)
    assert issubclass(v2_0.Client, v1_0.Client)
    assert issubclass(v2_0.ServerConfig, v1_0.ServerConfig)
    assert issubclass(v2_0.ClientConfig, v1_0.ClientConfig)
    # errors: v1.0's tree, the very same classes, plus three new ones.
    for name in ("RpcError", "ProtocolError", "TransportError", "ConnectionClosedError",
                 "RpcTimeoutError", "RemoteError", "ConfigError", "Status"):
        assert getattr(v2_0_errors, name) is getattr(v1_0_errors, name), name
    assert issubclass(v2_0.RemoteException, v1_0.RemoteError)
    assert issubclass(v2_0.SerializationError, v1_0.RpcError)
    assert issubclass(v2_0.ApiDefinitionError, v1_0.RpcError)
    assert issubclass(v2_0.ApiDefinitionError, TypeError)
    # cli: v1.0's parser and commands, with v2.0's options added.
    assert vars(v2_0_cli)["build_parser"] is v1_0_cli.build_parser


# -- inherited and overridden ------------------------------------------------------------------


def test_server_inherits_its_sockets_and_overrides_how_a_request_is_answered() -> None:
    for name in ("start", "serve_forever", "aclose", "make_connection", "error_frame",
                 "encode_answer", "refusal", "address", "connection_count"):
        assert getattr(v2_0.Server, name) is getattr(v1_0.Server, name), name
    overridden = own_functions(v2_0.Server) & own_functions(v1_0.Server)
    assert overridden == {"__init__", "handle", "register"}
    assert {"bind", "prepare", "resolve", "invoke", "respond"} <= own_functions(v2_0.Server)


def test_client_inherits_the_one_connection_per_call_transport_and_adds_proxies() -> None:
    for name in ("exchange", "_exchange", "next_request_id"):
        assert getattr(v2_0.Client, name) is getattr(v1_0.Client, name), name
    overridden = own_functions(v2_0.Client) & own_functions(v1_0.Client)
    assert overridden == {"__init__", "call"}  # call: v1.0's request line, refused
    assert {"proxy", "async_proxy", "invoke", "request_frame", "read_outcome"} <= own_functions(
        v2_0.Client)


def test_every_proxy_method_is_the_same_forwarding_code() -> None:
    for interface in (UserApi, InventoryApi):
        spec = v2_0.api_spec(interface)
        for asynchronous in (False, True):
            proxy_class = make_proxy_class(spec, asynchronous=asynchronous)
            assert issubclass(proxy_class, interface)
            assert not inspect.isabstract(proxy_class)
            codes = {getattr(proxy_class, name).__code__ for name in spec.methods}
            assert len(codes) == 1, (interface, asynchronous)


def test_a_server_sends_no_tracebacks_unless_configured_to() -> None:
    assert v2_0.ServerConfig().send_tracebacks is False
    assert v2_0.ServerConfig(send_tracebacks=True).send_tracebacks is True


# -- the notebook's shape ----------------------------------------------------------------------


def test_the_notebook_stays_a_lesson() -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    assert len(cells) <= 45, f"{len(cells)} cells: keep the lesson to about 45"
    sources = ["".join(cell["source"]) for cell in cells]
    # Each exercise has an answer cell marked for replacement, and a cell that checks it.
    answers = [t for t in sources if t.startswith("# Exercise ")]
    checks = [t for t in sources if t.startswith("# Check of exercise ")]
    assert len(answers) == len(checks) >= 2
    assert all("replace" in t.splitlines()[0] for t in answers)


def test_server_demo_and_client_demo_are_the_smallest_provider_and_consumer() -> None:
    # A learner runs them by name, in two shells; each is a screen long.
    for name in ("server_demo", "client_demo"):
        path = Path(v2_0.__file__).parent / f"{name}.py"
        assert len(path.read_text().splitlines()) <= 50, name
    server = subprocess.Popen([sys.executable, "-m", "stages.v2_0.server_demo"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the first line, once it listens
        match = re.fullmatch(r"serving (\S+) at 127\.0\.0\.1:(\d+)\n", line)
        assert match and match.group(1).endswith("user_stub.api.UserApi"), line
        done = subprocess.run([sys.executable, "-m", "stages.v2_0.client_demo", match.group(2)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "User(id=123456, name='Alan Turing', email='alan.123456@example.org')",
            "UserNotFound: no user with id 0"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
