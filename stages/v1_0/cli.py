"""Command line of v1.0: ``python -m stages.v1_0 demo|server|client|bench``.

Every later stage keeps this shape (and reuses these pieces), so a reader can run any version the
same way:

* ``demo``   starts what it needs, makes a few calls, prints what happened, exits 0;
* ``server`` serves until SIGINT/SIGTERM, printing ``listening on HOST:PORT`` once bound;
* ``client`` calls a running server and exits non-zero if a call fails;
* ``bench``  starts a server in its own process and measures latency and TPS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from stages.harness.bench import BenchResult, measure_concurrency_sweep, run_length
from stages.harness.process import ServerProcess
from stages.v1_0.client import Client
from stages.v1_0.config import ServerConfig
from stages.v1_0.errors import RemoteError, RpcError
from stages.v1_0.messages import Request, encode_request
from stages.v1_0.server import Server
from stages.v1_0.service import SERVICE_NAME, UserService

__all__ = ["main", "build_parser", "serve_until_signalled", "print_bench", "BENCH_LEVELS",
           "add_limit_options", "limit_settings"]

BENCH_LEVELS = (1, 4, 16, 64)


def build_parser(
    prog: str,
    description: str,
    add_options: Callable[[str, argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """The parser every stage starts from: the four commands and their common options.

    Args:
        add_options: called as ``add_options(command, subparser)`` for each command, so a later
            stage can add its own options (a serializer, heartbeat settings...).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="start a server, make a few calls, print them, exit")
    server = sub.add_parser("server", help="serve until SIGINT/SIGTERM")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="0 picks a free port")
    client = sub.add_parser("client", help="call a running server")
    client.add_argument("--host", default="127.0.0.1")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--calls", type=int, default=3)
    bench = sub.add_parser("bench", help="measure latency and TPS against a server process")
    bench.add_argument("--calls", type=int, default=None,
                       help="measured calls per level (default: short, or long with RPC_BENCH=full)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    if add_options is not None:
        for command, subparser in sub.choices.items():
            add_options(command, subparser)
    return parser


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The ``server`` options for v1.0's limits (a later stage adds them to its own parser)."""
    parser.add_argument("--max-frame-size", type=int, default=ServerConfig.max_frame_size,
                        help="largest frame body accepted or sent (bytes)")
    parser.add_argument("--frame-timeout", type=float, default=ServerConfig.frame_timeout,
                        help="seconds a started frame may take to arrive")
    parser.add_argument("--max-connections", type=int, default=ServerConfig.max_connections,
                        help="connections open at once; more are refused")


def limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`ServerConfig` keywords given by :func:`add_limit_options`'s options."""
    return {"max_frame_size": args.max_frame_size, "frame_timeout": args.frame_timeout,
            "max_connections": args.max_connections}


async def serve_until_signalled(server: Server) -> None:
    """Start ``server``, print its address, and serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:  # the port is taken, or not ours to take: say so, not a traceback
        where = f"{server.config.host}:{server.config.port}"
        raise SystemExit(f"error: cannot listen on {where}: {exc.strerror or exc} (another "
                         "server there? give another --port, or --port 0 for a free one)") from None
    try:
        host, port = server.address
        print(f"listening on {host}:{port}", flush=True)
        await stop.wait()
        print("shutting down", flush=True)
    finally:
        await server.aclose()


def print_bench(curves: dict[str, dict[int, BenchResult]], *, as_json: bool) -> None:
    """Print benchmark figures as a table, or as JSON."""
    if as_json:
        print(json.dumps({label: [r.summary() for r in curve.values()]
                          for label, curve in curves.items()}, indent=2))
        return
    print(f"{'workload':<28} {'in flight':>9} {'calls':>7} {'TPS':>10} {'p50 µs':>9} "
          f"{'p99 µs':>9} {'errors':>6}")
    for label, curve in curves.items():
        for level, r in curve.items():
            s = r.summary()
            p50, p99 = (f"{v:>9.0f}" if v is not None else f"{'-':>9}"
                        for v in (s["p50_us"], s["p99_us"]))
            print(f"{label:<28} {level:>9} {s['calls']:>7} {s['tps']:>10.0f} {p50} {p99} "
                  f"{s['errors']:>6}")


def new_server(config: ServerConfig | None = None) -> Server:
    """A v1.0 server with the demo user service registered."""
    server = Server(config)
    server.register(SERVICE_NAME, UserService().methods())
    return server


async def demo() -> int:
    async with new_server() as server:
        host, port = server.address
        print(f"server listening on {host}:{port}")
        client = Client(host, port)
        user = await client.call(SERVICE_NAME, "getUser", id=123456)
        print(f"userService:getUser?id=123456 -> {user}")
        print(f"userService:echo?text=hello   -> {await client.call(SERVICE_NAME, 'echo', text='hello')}")
        for method, params in (("getAddress", {"id": 1}), ("getUser", {"id": "abc"}),
                               ("getUser", {"name": "x"})):
            try:
                await client.call(SERVICE_NAME, method, **params)
            except RemoteError as exc:
                as_text = {name: str(value) for name, value in params.items()}
                line = encode_request(Request(SERVICE_NAME, method, as_text)).decode()
                print(f"{line} -> error {exc}")
    return 0


async def run_client(host: str, port: int, calls: int) -> int:
    client = Client(host, port)
    for i in range(calls):
        try:
            print(await client.call(SERVICE_NAME, "getUser", id=123456 + i))
        except RpcError as exc:
            print(f"call failed: {exc}", file=sys.stderr)
            return 1
    return 0


async def bench_workloads(
    workloads: Mapping[str, Callable[[], Awaitable[object]]], calls: int
) -> dict[str, dict[int, BenchResult]]:
    """Run each workload at every level of :data:`BENCH_LEVELS`."""
    return {label: await measure_concurrency_sweep(call, calls, BENCH_LEVELS, label=label)
            for label, call in workloads.items()}


async def bench(calls: int | None, as_json: bool) -> int:
    n = calls or run_length(500, 5000)
    with ServerProcess("stages.v1_0") as proc:
        client = Client(proc.host, proc.port)
        payload = "x" * 16384
        curves = await bench_workloads({
            "v1.0 getUser": lambda: client.call(SERVICE_NAME, "getUser", id=123456),
            "v1.0 echo 16 KiB": lambda: client.call(SERVICE_NAME, "echo", text=payload),
        }, n)
    print_bench(curves, as_json=as_json)
    return 0


def add_options(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "server":
        add_limit_options(parser)
        parser.add_argument("--idle-timeout", type=float, default=ServerConfig.idle_timeout,
                            help="close a connection silent this long (seconds)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser("python -m stages.v1_0", "v1.0: RPC over a raw asyncio socket",
                        add_options).parse_args(argv)
    if args.command == "demo":
        return asyncio.run(demo())
    if args.command == "server":
        config = ServerConfig(host=args.host, port=args.port, idle_timeout=args.idle_timeout,
                              **limit_settings(args))
        asyncio.run(serve_until_signalled(new_server(config)))
        return 0
    if args.command == "client":
        return asyncio.run(run_client(args.host, args.port, args.calls))
    return asyncio.run(bench(args.calls, args.json))
