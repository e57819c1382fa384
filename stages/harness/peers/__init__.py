"""The peers our RPC framework is benchmarked against, in the same run on the same machine.

Figures for a pure-Python RPC mean little alone: "40k calls/s" is fast or slow only next to what
the same two cores and the same loopback give to something else. So every benchmark also runs:

=============================================  ==================================================
peer                                           what it tells us
=============================================  ==================================================
:mod:`~stages.harness.peers.grpc_peer`         gRPC's asyncio API (``grpc.aio``), HTTP/2 +
                                               protobuf with a C core: the industrial baseline
:mod:`~stages.harness.peers.echo_peer`         a bare asyncio length-prefixed echo: no header,
                                               no codec, no dispatch; the ceiling any asyncio RPC
                                               on this machine can reach (its client can also
                                               read into a kept buffer, ``buffered_reads=True``,
                                               the way v2.1's connections read)
=============================================  ==================================================

Each peer is a module with a server command and a client class::

    python -m stages.harness.peers.echo_peer server --host 127.0.0.1 --port 0
    python -m stages.harness.peers.grpc_peer server --host 127.0.0.1 --port 0

The server prints ``listening on HOST:PORT`` once bound (the line
:class:`stages.harness.process.ServerProcess` waits for) and stops on SIGINT/SIGTERM. The clients
(:class:`EchoPeerClient`, :class:`GrpcPeerClient`) use ONE connection on which any number of
calls may be in flight, like our own clients.

The classes are exported lazily (module ``__getattr__``): the package is imported before
``python -m stages.harness.peers.grpc_peer`` runs its module as ``__main__``, and importing the
submodules here would load each one twice (runpy warns about exactly that) and would make the
echo peer pay for importing ``grpc``, a development-only dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stages.harness.peers.echo_peer import EchoPeerClient, EchoServer
    from stages.harness.peers.grpc_peer import GrpcPeerClient, GrpcPeerServer

__all__ = [
    "EchoPeerClient",
    "EchoServer",
    "GrpcPeerClient",
    "GrpcPeerServer",
    "parse_server_command",
    "run_server_command",
    "stop_signal",
]

# Which submodule defines each lazily exported name. A tuple of pairs, not a dict: nothing at
# module level may be mutable.
_LAZY_EXPORTS: tuple[tuple[str, str], ...] = (
    ("EchoPeerClient", "echo_peer"),
    ("EchoServer", "echo_peer"),
    ("GrpcPeerClient", "grpc_peer"),
    ("GrpcPeerServer", "grpc_peer"),
)


def __getattr__(name: str) -> object:
    """Import the submodule that defines ``name`` on first use (see the module docstring)."""
    for exported, module in _LAZY_EXPORTS:
        if exported == name:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_server_command(prog: str, description: str,
                         argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a peer's command line: ``server [--host HOST] [--port PORT]``.

    The same shape as every stage's ``server`` command, so :class:`ServerProcess` runs a peer the
    way it runs a stage.

    Args:
        prog: program name shown in ``--help``.
        description: one line shown in ``--help``.
        argv: the arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        A namespace with ``command`` (always ``"server"``), ``host`` and ``port``.

    Raises:
        SystemExit: the arguments are invalid or ``--help`` was asked for (argparse's way).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="serve until SIGINT/SIGTERM")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser.parse_args(argv)


@contextlib.contextmanager
def stop_signal() -> Iterator[asyncio.Event]:
    """An event set when the process receives SIGINT or SIGTERM, while the block runs.

    Enter it *before* printing the ready line: whoever reads that line may signal at once, and a
    SIGTERM that arrives before the handler is installed kills the process uncleanly (exit -15).
    The handlers are loop signal handlers (the signal becomes a callback on the loop, so the
    server shuts down in order instead of dying inside whatever it was doing); they are removed
    on exit, so a later signal gets the default behaviour.

    Usage::

        with stop_signal() as stop:
            async with server:
                print(f"listening on {host}:{port}", flush=True)
                await stop.wait()

    Raises:
        RuntimeError: no running event loop.
        ValueError: not in the main thread (a limit of ``loop.add_signal_handler``).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


class _Bound(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...


def run_server_command(prog: str, description: str,
                       make_server: Callable[[str, int], AbstractAsyncContextManager[_Bound]],
                       argv: Sequence[str] | None = None) -> int:
    """A peer's whole command line: parse ``server [--host] [--port]``, serve until SIGINT or
    SIGTERM, printing ``listening on HOST:PORT`` once bound; returns the exit code.

    Args:
        make_server: ``(host, port) ->`` an async context manager that serves while entered and
            whose value has an ``address``.
    """
    args = parse_server_command(prog, description, argv)

    async def serve() -> None:
        with stop_signal() as stop:
            async with make_server(args.host, args.port) as server:
                host, port = server.address
                print(f"listening on {host}:{port}", flush=True)
                await stop.wait()
                print("shutting down", flush=True)

    asyncio.run(serve())
    return 0
