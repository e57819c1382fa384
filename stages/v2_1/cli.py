"""Command line of v2.1: v2.0's commands over long-lived connections, plus heartbeat options.

``python -m stages.v2_1 demo|server|client|bench``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence

from stages.harness.bench import run_length
from stages.v1_0.cli import (
    add_limit_options,
    build_parser,
    limit_settings,
    print_bench,
    serve_until_signalled,
)
from stages.v2_0.cli import NAMES, add_traceback_option, run_client
from stages.v2_0.provider import InventoryApiImpl, UserApiImpl
from stages.v2_0.user_stub import InventoryApi, UserApi
from stages.v2_1.bench import (
    dispatch_paths,
    median_ratios,
    ratios,
    run_comparison,
    where_time_goes,
)
from stages.v2_1.client import Client, rpc_timeout
from stages.v2_1.config import ClientConfig, ServerConfig
from stages.v2_1.errors import RpcError, RpcTimeoutError
from stages.v2_1.server import Server
from stages.v2_1.timer_stub import TimerApi, TimerImpl

__all__ = ["main", "new_server"]


def new_server(config: ServerConfig | None = None) -> Server:
    """A v2.1 server with the demo implementations bound (v2.0's, plus the timer).

    v2.0's implementations compute from memory and never wait, so they run inline, on the
    event loop. The timer's ``sleep`` is a coroutine (a task); its ``block`` blocks a thread
    (the thread pool).
    """
    server = Server(config)
    server.bind(UserApi, UserApiImpl(), inline=True)
    server.bind(InventoryApi, InventoryApiImpl(), inline=True)
    server.bind(TimerApi, TimerImpl())
    return server


async def demo() -> int:
    # The demo's heartbeat is fast (0.2 s) so that it shows within a second; the server must
    # then allow pings that often, or it would answer GOAWAY too_many_pings.
    async with new_server(ServerConfig(min_ping_interval=0.1, send_tracebacks=True)) as server:
        host, port = server.address
        print(f"server on {host}:{port}")
        client = Client(host, port, ClientConfig(heartbeat_interval=0.2))
        users = client.async_proxy(UserApi)
        timer = client.async_proxy(TimerApi)

        got = await asyncio.gather(*(users.get_user(i) for i in range(1, 1001)))
        assert [u.id for u in got] == list(range(1, 1001))
        print(f"1000 calls in flight at once: all answered, {client.connects} connection opened, "
              f"{server.connection_count} connection on the server")

        start = time.monotonic()
        slow = asyncio.ensure_future(timer.sleep(0.5))
        fast = await users.get_user(7)
        print(f"a 0.5 s call is in flight; a fast call behind it returned after "
              f"{(time.monotonic() - start) * 1000:.0f} ms: {fast.name}")
        await slow

        with rpc_timeout(0.1):
            try:
                await timer.sleep(1.0)
            except RpcTimeoutError as exc:
                print(f"rpc_timeout(0.1) around a 1 s call: {type(exc).__name__}: {exc}")

        await asyncio.sleep(0.7)  # idle: the client pings, the server answers
        print(f"after 0.7 s idle with a 0.2 s heartbeat interval, still connected: "
              f"{client.connection is not None and client.connection.usable}")

        pending = asyncio.ensure_future(timer.sleep(0.3))
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(server.aclose())
        print(f"graceful shutdown: the call in flight still completes "
              f"({(await pending) > 0}), then the server closes")
        await closing
        try:
            await users.get_user(1)
        except RpcError as exc:
            print(f"a call after the shutdown fails fast: {type(exc).__name__}")
        await client.aclose()
    return 0


async def bench(calls: int | None, runs: int | None, serializer: str, as_json: bool,
                pin: bool = False) -> int:
    n = calls or run_length(500, 5000)
    runs = runs or run_length(1, 5)
    all_ratios = []
    curves = {}
    for _ in range(runs):
        curves = await run_comparison(n, serializer=serializer, pin=pin)
        all_ratios.append(ratios(curves))
    summary = median_ratios(all_ratios)
    paths = await dispatch_paths(n, serializer)
    if as_json:
        print(json.dumps({"runs": runs, "calls": n, "serializer": serializer, "pinned": pin,
                          "median_ratios": summary, "ratios_per_run": all_ratios,
                          "last_run": {k: [r.summary() for r in v.values()]
                                       for k, v in curves.items()},
                          "dispatch_paths": {c.run.value: {"p50_us": c.p50_us,
                                                           "tps_64": c.tps_64}
                                             for c in paths}}, indent=2))
        return 0
    print_bench(curves, as_json=False)
    placement = "client and servers pinned to separate CPUs" if pin else "unpinned"
    print(f"\nratios, median of {runs} run(s) of {n} calls per level ({serializer}, {placement}):")
    for key, value in summary.items():
        each = [run[key] for run in all_ratios]
        spread = f"   (runs: {min(each):.2f} to {max(each):.2f})" if runs > 1 else ""
        print(f"  {key:<58} {value:6.2f}{spread}")
    print("\nwhere the time goes (get_user):")
    for share in await where_time_goes(n * 4, serializer=serializer, pin=pin):
        print(f"  {share.in_flight:>3} in flight: {share.tps:8.0f} calls/s; CPU per call: client "
              f"{share.client_us_per_call:5.1f} µs, server {share.server_us_per_call:5.1f} µs; "
              f"busy: client {share.client_busy:4.0%}, server {share.server_busy:4.0%}")
    print("\nhow a method runs, and what it costs per call (client and server in this process):")
    for cost in paths:
        print(f"  {cost.run.value:<7} one at a time: p50 {cost.p50_us:6.1f} µs;  64 in flight: "
              f"{cost.tps_64:8.0f} calls/s = {cost.us_per_call_64:5.1f} µs per call")
    return 0


def add_options(command: str, parser: argparse.ArgumentParser) -> None:
    if command in ("demo", "client", "bench"):
        parser.add_argument("--serializer", choices=NAMES, default="pickle")
    if command == "bench":
        parser.add_argument("--runs", type=int, default=None,
                            help="runs to take the median of (default 1, or 5 with RPC_BENCH=full)")
        parser.add_argument("--pin", action="store_true",
                            help="run the client on one CPU and the servers on the others, for "
                            "steadier one-call-at-a-time ratios")
    if command == "server":
        parser.add_argument("--idle-timeout", type=float, default=ServerConfig.idle_timeout,
                            help="close a client silent this long (seconds)")
        parser.add_argument("--min-ping-interval", type=float,
                            default=ServerConfig.min_ping_interval)
        parser.add_argument("--shutdown-grace", type=float, default=ServerConfig.shutdown_grace)
        add_limit_options(parser)
        parser.add_argument("--max-concurrent-calls", type=int,
                            default=ServerConfig.max_concurrent_calls,
                            help="calls of one connection running at once")
        parser.add_argument("--max-server-calls", type=int, default=ServerConfig.max_server_calls,
                            help="calls of all connections running at once")
        parser.add_argument("--max-workers", type=int, default=ServerConfig.max_workers,
                            help="threads that run plain (blocking) methods")
        add_traceback_option(parser)
        parser.add_argument("--plain", action="store_true",
                            help="serve with v2.0's plain argument check and pickle only, "
                            "without the hot path of stages.v2_1.fastpath (to measure it)")
    if command == "client":
        parser.add_argument("--heartbeat-interval", type=float,
                            default=ClientConfig.heartbeat_interval)
        parser.add_argument("--timeout", type=float, default=ClientConfig.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser("python -m stages.v2_1", "v2.1: long-lived multiplexed connections and "
                        "heartbeats", add_options).parse_args(argv)
    if args.command == "demo":
        return asyncio.run(demo())
    if args.command == "server":
        server_config = ServerConfig(host=args.host, port=args.port,
                                     idle_timeout=args.idle_timeout,
                                     min_ping_interval=args.min_ping_interval,
                                     shutdown_grace=args.shutdown_grace,
                                     max_concurrent_calls=args.max_concurrent_calls,
                                     max_server_calls=args.max_server_calls,
                                     max_workers=args.max_workers,
                                     send_tracebacks=args.send_tracebacks,
                                     fastpath=not args.plain, **limit_settings(args))
        asyncio.run(serve_until_signalled(new_server(server_config)))
        return 0
    if args.command == "client":
        client_config = ClientConfig(serializer=args.serializer, timeout=args.timeout,
                                     heartbeat_interval=args.heartbeat_interval)
        with Client(args.host, args.port, client_config) as client:
            return run_client(client, args.calls)
    return asyncio.run(bench(args.calls, args.runs, args.serializer, args.json, args.pin))
