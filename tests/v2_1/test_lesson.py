"""What notebook 03 says v2.1 inherits, extends and replaces, checked against the packages.

The notebook shows the delta from v2.0 as a learner should meet it: the modules with their
docstrings, a diff of ``Client.exchange``, the sources at the heart of the version. The evidence
for what it says (which module is new, which class extends which, which methods are inherited
and which replaced, how the demo server runs each method, which defaults agree) is asserted
here, so that a change to a stage that makes the lesson wrong fails a test rather than a reader.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import stages.v1_0 as v1_0
import stages.v2_0 as v2_0
import stages.v2_1 as v2_1
from stages.v1_0 import server as v1_0_server
from stages.v2_0 import errors as v2_0_errors
from stages.v2_0 import provider as v2_0_provider
from stages.v2_0.api import address_of
from stages.v2_0.user_stub import InventoryApi, UserApi
from stages.v2_1 import cli as v2_1_cli
from stages.v2_1 import errors as v2_1_errors
from stages.v2_1 import protocol as v2_1_protocol
from stages.v2_1.reader import OwnBufferReader
from stages.v2_1.server import Run
from stages.v2_1.timer_stub import TimerApi
from stages.v2_1.writer import BatchedWriter


def modules(package: ModuleType) -> set[str]:
    """The modules and subpackages of a stage, without ``__main__``."""
    return {m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"}


V10, V20, V21 = modules(v1_0), modules(v2_0), modules(v2_1)

#: What the lesson says about every module of either version.
NEW = {"heartbeat", "writer", "reader", "timer_stub", "bench", "fastpath", "blocking"}
REVISED = {"protocol", "server", "client", "config", "errors", "cli"}  # a module of that name before
FROM_V2_0 = {"api", "serializers", "protos", "limits", "pickle_scan", "user_stub", "provider"}
# v2.0's demo consumer (v2.1's demo calls its proxies itself), and its smallest provider and
# consumer, ServerDemo and ClientDemo, which a learner runs by name.
NOT_USED = {"consumer", "server_demo", "client_demo"}


def overridden(cls: type, *bases: type) -> list[str]:
    """Functions ``cls`` defines itself that one of ``bases`` also defines."""
    return sorted(name for name, value in vars(cls).items()
                  if inspect.isfunction(value) and any(name in vars(base) for base in bases))


def imports(module: str) -> set[str]:
    """The absolute imports of one module of the repository."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


# -- the module table ----------------------------------------------------------------------------


def test_every_module_of_either_version_is_accounted_for() -> None:
    assert NEW | REVISED | FROM_V2_0 | NOT_USED == V20 | V21
    assert V21 == NEW | REVISED


def test_the_new_modules_had_no_namesake_before() -> None:
    assert not NEW & (V10 | V20)


def test_each_revised_module_had_a_namesake_in_v2_0_or_v1_0() -> None:
    for name in REVISED:
        assert name in V20 or name in V10, name
    assert "protocol" in V10 and "protocol" not in V20  # v2.0 used v1.0's codec as it was


@pytest.mark.parametrize("name", sorted(V21))
def test_every_v2_1_module_says_what_it_is_in_its_first_docstring_line(name: str) -> None:
    # The notebook's module table prints this line: it must exist and stand on its own.
    doc = importlib.import_module(f"stages.v2_1.{name}").__doc__
    assert doc and doc.strip(), name
    first = doc.strip().splitlines()[0]
    assert first.endswith(".") and len(first) <= 100, (name, first)


# -- what each revised module keeps and changes ------------------------------------------------


def test_protocol_is_v1_0s_codec_plus_three_control_frames() -> None:
    assert v2_1.FrameCodec is v1_0.FrameCodec and v2_1.Frame is v1_0.Frame
    added = set(v2_1.FrameType.__members__) - set(v1_0.FrameType.__members__)
    assert added == {"PING", "PONG", "GOAWAY"}
    assert v2_1.PROTOCOL_VERSION == v1_0.PROTOCOL_VERSION
    # Control frames never change: they are encoded once, with request id 0.
    ping = v2_1_protocol.encode_frame(v2_1.Frame(v2_1.FrameType.PING, 0))
    assert v2_1_protocol.PING_FRAME == ping
    assert len(v2_1_protocol.PONG_FRAME) == v2_1_protocol.HEADER_SIZE


def test_the_server_keeps_v2_0s_dispatch() -> None:
    assert issubclass(v2_1.Server, v2_0.Server)
    for name in ("prepare", "resolve", "respond", "error_outcome"):
        assert getattr(v2_1.Server, name) is getattr(v2_0.Server, name), name


def test_the_server_overrides_only_what_long_connections_need() -> None:
    assert overridden(v2_1.Server, v2_0.Server, v1_0.Server) == [
        "__init__", "_detach", "_rebuild_serializers", "aclose", "bind", "check_method",
        "make_connection"]


def test_the_server_connection_is_rewritten_whole() -> None:
    assert not issubclass(v2_1.ServerConnection, v1_0_server.ServerConnection)


def test_the_client_replaces_exchange_and_keeps_what_is_above_it() -> None:
    assert issubclass(v2_1.Client, v2_0.Client)
    for name in ("request_frame", "read_outcome"):
        assert getattr(v2_1.Client, name) is getattr(v2_0.Client, name), name
    assert v2_1.Client.exchange is not v2_0.Client.exchange
    # Besides exchange: the proxies (for timeout=), invoke (the one route, through the
    # interceptors), _prepare (the hot path's spec and serializer) and the life cycle.
    assert overridden(v2_1.Client, v2_0.Client, v1_0.Client) == [
        "__init__", "_prepare", "async_proxy", "close", "exchange", "invoke", "proxy"]
    for name in ("proxy", "async_proxy"):
        assert "timeout" in inspect.signature(getattr(v2_1.Client, name)).parameters, name


def test_both_connections_are_buffered_protocols_with_the_batched_writer() -> None:
    for cls in (v2_1.ServerConnection, v2_1.ClientConnection):
        assert issubclass(cls, asyncio.BufferedProtocol), cls
        assert issubclass(cls, BatchedWriter) and issubclass(cls, OwnBufferReader), cls


def test_the_configuration_extends_v2_0s() -> None:
    assert issubclass(v2_1.ServerConfig, v2_0.ServerConfig)
    assert issubclass(v2_1.ClientConfig, v2_0.ClientConfig)


def test_the_errors_are_v2_0s_tree_unchanged() -> None:
    assert v2_1_errors.__all__ == v2_0_errors.__all__
    for name in v2_0_errors.__all__:
        assert getattr(v2_1_errors, name) is getattr(v2_0_errors, name), name


def test_the_command_line_is_v1_0s_with_more_options() -> None:
    v1_0_cli = importlib.import_module("stages.v1_0.cli")
    assert v2_1_cli.build_parser is v1_0_cli.build_parser


def test_interfaces_serializers_and_the_demo_providers_are_v2_0s() -> None:
    assert not FROM_V2_0 & V21
    assert v2_1.rpc_api is v2_0.rpc_api and v2_1.api_spec is v2_0.api_spec
    assert v2_1.PickleSerializer is v2_0.PickleSerializer
    assert v2_1.ProtobufSerializer is v2_0.ProtobufSerializer
    assert v2_1_cli.UserApiImpl is v2_0_provider.UserApiImpl


def test_v2_1_does_not_use_v2_0s_demo_consumer() -> None:
    for name in V21:
        module = f"stages.v2_1.{name}"
        assert not any(i.startswith("stages.v2_0.consumer") for i in imports(module)), module


# -- what the notebook runs -----------------------------------------------------------------------


def test_the_demo_server_runs_each_method_as_the_lesson_says() -> None:
    runs = v2_1_cli.new_server().runs  # not started: bind() needs no network
    assert runs[address_of(TimerApi), "sleep"] is Run.TASK
    assert runs[address_of(TimerApi), "block"] is Run.THREAD
    for interface in (UserApi, InventoryApi):
        methods = [method for (address, method) in runs if address == address_of(interface)]
        assert methods, interface
        assert all(runs[address_of(interface), method] is Run.INLINE for method in methods)


def test_the_heartbeat_defaults_agree_with_each_other() -> None:
    client, server = v2_1.ClientConfig(), v2_1.ServerConfig()
    assert (client.heartbeat_interval, client.idle) == (5.0, 15.0)
    # The server hears from an idle client (its pings) before it would close it as silent...
    assert server.idle_timeout > client.heartbeat_interval
    # ...and the clients' pings are not strikes.
    assert client.heartbeat_interval >= server.min_ping_interval
    budget = v2_1.detection_budget(client.heartbeat_interval, client.idle)
    assert budget.worst_case_detection == client.idle
    assert budget.bytes_per_minute_idle == 60 / client.heartbeat_interval * 2 * 16
