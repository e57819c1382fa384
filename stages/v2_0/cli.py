"""Command line of v2.0: v1.0's commands, now calling interfaces through proxies.

``python -m stages.v2_0 demo|server|client|bench [--serializer pickle|protobuf]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from stages.harness.bench import run_length
from stages.harness.process import ServerProcess
from stages.v1_0.cli import bench_workloads, build_parser, print_bench, serve_until_signalled
from stages.v2_0.client import Client
from stages.v2_0.config import ClientConfig, ServerConfig
from stages.v2_0.consumer import run_consumer
from stages.v2_0.errors import RpcError
from stages.v2_0.provider import InventoryApiImpl, UserApiImpl
from stages.v2_0.serializers import SERIALIZERS
from stages.v2_0.server import Server
from stages.v2_0.user_stub import InventoryApi, UserApi

__all__ = ["main", "new_server", "add_traceback_option"]

NAMES = [s.name for s in SERIALIZERS.values()]


def new_server(config: ServerConfig | None = None) -> Server:
    """A v2.0 server with the demo implementations bound."""
    server = Server(config)
    server.bind(UserApi, UserApiImpl())
    server.bind(InventoryApi, InventoryApiImpl())
    return server


async def demo(serializers: list[str]) -> int:
    # A demo shows where a remote error came from: its server sends tracebacks.
    async with new_server(ServerConfig(send_tracebacks=True)) as server:
        host, port = server.address
        print(f"provider: bound {', '.join(server.bindings)} on {host}:{port}")
        with Client(host, port) as client:
            for name in serializers:
                # The consumer blocks; run it off the server's loop, in a worker thread.
                await asyncio.to_thread(run_consumer, client, name)
    return 0


def run_client(client: Client, calls: int) -> int:
    """Call ``get_user`` ``calls`` times through a blocking proxy; 1 on the first failure."""
    user_api = client.proxy(UserApi)
    for i in range(calls):
        try:
            print(user_api.get_user(123456 + i))
        except RpcError as exc:
            print(f"call failed: {exc}", file=sys.stderr)
            return 1
    return 0


async def bench(calls: int | None, serializers: list[str], as_json: bool) -> int:
    n = calls or run_length(500, 5000)
    blob = b"x" * 16384
    with ServerProcess("stages.v2_0") as proc:
        client = Client(proc.host, proc.port)
        workloads = {}
        for name in serializers:
            user_api = client.async_proxy(UserApi, serializer=name)
            inventory = client.async_proxy(InventoryApi, serializer=name)
            workloads[f"v2.0 {name} get_user"] = lambda u=user_api: u.get_user(123456)
            workloads[f"v2.0 {name} echo 16 KiB"] = lambda i=inventory: i.echo(blob)
        curves = await bench_workloads(workloads, n)
    print_bench(curves, as_json=as_json)
    return 0


def add_serializer_option(command: str, parser: argparse.ArgumentParser) -> None:
    if command in ("demo", "client", "bench"):
        parser.add_argument("--serializer", choices=NAMES, default=None,
                            help="default: both for demo and bench, pickle for client")
    if command == "server":
        add_traceback_option(parser)


def add_traceback_option(parser: argparse.ArgumentParser) -> None:
    """``--send-tracebacks``: send the traceback of a method's exception to the caller."""
    parser.add_argument("--send-tracebacks", action="store_true",
                        help="send callers the traceback of an exception a method raised (off: "
                        "its type and message only)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser("python -m stages.v2_0", "v2.0: interfaces, dynamic proxies, "
                        "pluggable serialization", add_serializer_option).parse_args(argv)
    chosen = [args.serializer] if getattr(args, "serializer", None) else NAMES
    if args.command == "demo":
        return asyncio.run(demo(chosen))
    if args.command == "server":
        server_config = ServerConfig(host=args.host, port=args.port,
                                     send_tracebacks=args.send_tracebacks)
        asyncio.run(serve_until_signalled(new_server(server_config)))
        return 0
    if args.command == "client":
        config = ClientConfig(serializer=args.serializer or "pickle")
        with Client(args.host, args.port, config) as client:
            return run_client(client, args.calls)
    return asyncio.run(bench(args.calls, chosen, args.json))
