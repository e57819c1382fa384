"""Command line of v3.x: providers that register, consumers that discover, and the registry.

::

    python -m stages.v3_x demo [--zk HOST:PORT]
    python -m stages.v3_x server --zk HOST:PORT [--port N] [--weight W] [--incidents]
                                 [--max-calls-per-api N]
    python -m stages.v3_x client --zk HOST:PORT [--lb STRATEGY] [--mode MODE] [--calls N] [--json]
    python -m stages.v3_x incident --at HOST:PORT fail|slow|freeze|heal [--seconds S] [--delay D]
    python -m stages.v3_x registry --zk HOST:PORT
    python -m stages.v3_x config get|set|watch --zk HOST:PORT --api ADDRESS [FILE|-] [--unchecked]
    python -m stages.v3_x zookeeper
    python -m stages.v3_x bench [--zk HOST:PORT] [--json]

Without ``--zk``, ``$RPC_ZK`` names the ZooKeeper; ``demo`` (and only ``demo``) starts a local one
when neither is given. ``zookeeper`` runs a local ZooKeeper in the foreground, for a learner who
starts providers and consumers in separate terminals. ``incident`` stages an incident on a
provider started with ``--incidents`` (see :mod:`stages.v3_x.incident`). ``config`` reads,
writes or follows an API's settings in the config center (see :mod:`stages.v3_x.settings`);
``set`` checks the document first, unless ``--unchecked`` (to see consumers refuse it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.watchers import DataWatch

from stages.harness.process import ServerProcess
from stages.harness.zookeeper import RPC_ZK_ENV, LocalZooKeeper, resolve_zookeeper
from stages.v1_0.cli import add_limit_options, limit_settings, serve_until_signalled
from stages.v2_0.cli import add_traceback_option
from stages.v2_0.provider import InventoryApiImpl, UserApiImpl
from stages.v2_0.user_stub import InventoryApi, UserApi
from stages.v2_1 import client as v2_1_client
from stages.v2_1.timer_stub import TimerApi, TimerImpl
from stages.v3_x.balancer import STRATEGIES
from stages.v3_x.client import Client
from stages.v3_x.config import DEFAULT_BALANCER, ClientConfig, ServerConfig
from stages.v3_x.demo import demo
from stages.v3_x.errors import ConfigError, RpcError
from stages.v3_x.incident import IncidentApi
from stages.v3_x.metrics import ClientMetrics, ServerMetrics
from stages.v3_x.policy import MODES, CallPolicy
from stages.v3_x.registry import ROOT, Registry, ZooKeeperRegistry
from stages.v3_x.security import TlsConfig
from stages.v3_x.server import Server
from stages.v3_x.settings import ApiSettings, config_path

__all__ = ["main", "new_server", "print_tree", "RPC_ZK_AUTH_ENV"]

#: Where the commands read ZooKeeper credentials from when ``--zk-auth`` is not given.
RPC_ZK_AUTH_ENV = "RPC_ZK_AUTH"


def new_server(registry: Registry, config: ServerConfig | None = None) -> Server:
    """A v3 provider of the demo interfaces (v2.0's implementations, v2.1's timer)."""
    server = Server(config, registry=registry)
    server.bind(UserApi, UserApiImpl(), inline=True)
    server.bind(InventoryApi, InventoryApiImpl(), inline=True)
    server.bind(TimerApi, TimerImpl())
    return server


def zk_hosts(given: str | None) -> str:
    hosts = given or os.environ.get(RPC_ZK_ENV, "")
    if not hosts:
        raise SystemExit("give --zk HOST:PORT (or set RPC_ZK), or start one with "
                         "`python -m stages.v3_x zookeeper`")
    return hosts


# -- client ------------------------------------------------------------------------------------


async def call_users(client: Client, calls: int) -> dict[str, object]:
    """``get_user`` ``calls`` times, one after the other: how many each provider answered, the
    failures by type, and what the call policies did (retries, redirects, fallbacks...)."""
    users = client.async_proxy(UserApi)
    view = await client.view(UserApi.__rpc_api__.address)  # type: ignore[attr-defined]
    before = {key: c.calls for key, c in view.candidates.items()}
    errors: collections.Counter[str] = collections.Counter()
    for i in range(calls):
        try:
            await users.get_user(1 + i % 1000)
        except RpcError as exc:
            errors[type(exc).__name__] += 1
    per_provider = {key: c.calls - before.get(key, 0) for key, c in view.candidates.items()
                    if c.calls - before.get(key, 0)}
    return {"calls": calls, "errors": sum(errors.values()), "error_types": dict(errors),
            "per_provider": dict(sorted(per_provider.items())), "policy": dict(client.stats)}


def policy_for_mode(mode: str) -> CallPolicy:
    """The policy of ``client --mode``: get_user reads, so it may be sent again (idempotent)."""
    return CallPolicy(mode=mode, idempotent=True)  # type: ignore[arg-type]


async def run_client(hosts: str, balancer: str, mode: str, calls: int, as_json: bool, *,
                     tls: TlsConfig | None = None, metrics_port: int | None = None) -> int:
    client = Client(ZooKeeperRegistry(hosts), ClientConfig(balancer=balancer, tls=tls))
    client.set_policy(UserApi, policy_for_mode(mode))
    if metrics_port is not None:
        metrics = ClientMetrics()
        metrics.attach(client)
        serve_metrics(metrics, metrics_port)
    try:
        result = await call_users(client, calls)
    finally:
        await client.aclose()
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{result['calls']} calls ({mode}), {result['errors']} errors "
              f"{result['error_types'] or ''}; per provider: {result['per_provider']}; "
              f"policy: {result['policy']}")
    return 0 if not result["errors"] else 1


def stage_incident(at: str, kind: str, seconds: float, delay: float) -> int:
    """Call the incident control of the provider at ``at`` (a v2.1 client: one address)."""
    host, _, port = at.rpartition(":")
    with v2_1_client.Client(host, int(port)) as client:
        control = client.proxy(IncidentApi)
        answer = {"fail": lambda: control.fail(seconds),
                  "slow": lambda: control.slow(delay, seconds),
                  "freeze": lambda: control.freeze(seconds), "heal": control.heal}[kind]()
    print(f"{at}: {answer}")
    return 0


# -- registry and zookeeper --------------------------------------------------------------------


def print_tree(hosts: str, root: str = ROOT) -> str:
    """The registry's tree as text, each provider with its entry."""
    zk = KazooClient(hosts=hosts)
    zk.start(timeout=10)
    lines: list[str] = []

    def walk(path: str, depth: int) -> None:
        try:
            children = sorted(zk.get_children(path))
            data, stat = zk.get(path)
        except NoNodeError:
            return
        name = path.rsplit("/", 1)[-1] or "/"
        note = "  (ephemeral)" if stat.ephemeralOwner else ""
        lines.append(f"{'    ' * depth}{name}{note}")
        if data and stat.ephemeralOwner:
            lines.append(f"{'    ' * (depth + 1)}{data.decode('utf-8', 'replace')}")
        for child in children:
            walk(f"{path}/{child}", depth + 1)

    try:
        walk(root, 0)
    finally:
        zk.stop()
        zk.close()
    return "\n".join(lines) if lines else f"(no {root} node yet)"


def run_zookeeper() -> int:
    # Ctrl-C or SIGTERM ends the wait below (the signals are held for sigwait, not delivered),
    # and leaving the with block stops the server and removes its directory.
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with LocalZooKeeper() as zk:
        print(f"ZooKeeper listening on {zk.hosts}; Ctrl-C stops it", flush=True)
        print(f"  export {RPC_ZK_ENV}={zk.hosts}", flush=True)
        signal.sigwait(signals)
        print("stopping ZooKeeper", flush=True)
    return 0


# -- demo --------------------------------------------------------------------------------------


# -- bench -------------------------------------------------------------------------------------


async def bench(given_zk: str | None, calls: int | None, as_json: bool) -> int:
    """v3.x (registry, balancer, one provider) against v2.1 (direct), in the same run."""
    from stages.harness.bench import measure_concurrency_sweep, run_length
    from stages.v1_0.cli import print_bench
    from stages.v2_1.client import Client as DirectClient

    n = calls or run_length(500, 5000)
    levels = (1, 16, 64)
    with resolve_zookeeper(given_zk) as hosts, \
            ServerProcess("stages.v3_x", ["--zk", hosts]), \
            ServerProcess("stages.v2_1") as v2_server:
        v3 = Client(ZooKeeperRegistry(hosts))
        v3_users = v3.async_proxy(UserApi)
        v21 = DirectClient(v2_server.host, v2_server.port)
        v21_users = v21.async_proxy(UserApi)
        await v3_users.get_user(1)  # discovery and connection before measuring
        curves = {
            "v2.1 direct": await measure_concurrency_sweep(lambda: v21_users.get_user(1), n,
                                                           levels, label="v2.1 direct"),
            "v3.x via registry (p2c)": await measure_concurrency_sweep(
                lambda: v3_users.get_user(1), n, levels, label="v3.x via registry (p2c)"),
        }
        await v3.aclose()
        await v21.aclose()
    ratio = curves["v3.x via registry (p2c)"][64].tps / curves["v2.1 direct"][64].tps
    if as_json:
        print(json.dumps({"calls": n, "tps_64_ratio_v3_over_v21": ratio,
                          "curves": {k: [r.summary() for r in v.values()]
                                     for k, v in curves.items()}}, indent=2))
        return 0
    print_bench(curves, as_json=False)
    print(f"\nTPS at 64 in flight, v3.x / v2.1: {ratio:.2f}")
    return 0


async def bench_costs(given_zk: str | None, calls: int | None, rounds: int,
                      as_json: bool) -> int:
    """What TLS, the token and metrics cost, each against plain, in one run."""
    from stages.harness.bench import run_length
    from stages.v3_x.costs import measure_costs

    n = calls or run_length(2000, 20000)
    with resolve_zookeeper(given_zk) as hosts:
        costs = await measure_costs(hosts, n, rounds)
    if as_json:
        print(json.dumps({"calls": n, "rounds": rounds,
                          "costs": [cost.summary() for cost in costs]}, indent=2))
        return 0
    plain = costs[0]
    print(f"64 in flight, {n} calls per run, medians of {rounds} interleaved rounds")
    print(f"{'setting':<10} {'calls/s':>9} {'vs plain':>9} {'client µs':>10} {'provider µs':>12}")
    for cost in costs:
        print(f"{cost.name:<10} {cost.tps:>9.0f} {cost.tps / plain.tps:>9.2f} "
              f"{cost.client_us:>10.1f} {cost.server_us:>12.1f}")
    return 0


# -- the config center -------------------------------------------------------------------------


def run_config(hosts: str, action: str, api: str, source: str | None, unchecked: bool,
               timeout: float, *, credentials: str | None = None) -> int:
    """``config get`` prints the settings and their version; ``set`` writes a document (from a
    file, or ``-`` for standard input); ``watch`` prints each version as it is written."""
    path = config_path(api)
    zk = KazooClient(hosts=hosts)
    zk.start(10)
    try:
        if action == "set":
            data = (sys.stdin.buffer.read() if source in (None, "-")
                    else Path(source).read_bytes())
            if not unchecked:
                try:
                    ApiSettings.parse(data)
                except ConfigError as exc:
                    print(f"refused: {exc}", file=sys.stderr)
                    return 2
            version = asyncio.run(write_settings(hosts, api, data, credentials))
            print(f"{api}: settings version {version}")
            return 0
        if action == "get":
            if zk.exists(path) is None:
                print(f"{api}: no settings")
                return 0
            data, stat = zk.get(path)
            print(f"{api}: settings version {stat.version}")
            print(data.decode("utf-8", "replace"))
            return 0
        deadline = time.monotonic() + timeout

        def show(data: bytes | None, stat: object) -> None:
            version = getattr(stat, "version", -1)
            print(f"{api}: settings version {version}: {(data or b'').decode('utf-8', 'replace')}",
                  flush=True)

        DataWatch(zk, path, show)
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return 0
    finally:
        zk.stop()
        zk.close()


# -- the command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.v3_x", description="v3.x: "
                                     "providers registered in ZooKeeper, consumers that discover "
                                     "and balance")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cmd = sub.add_parser("demo", help="a local ZooKeeper, three providers, a consumer")
    demo_cmd.add_argument("--zk", help="use this ZooKeeper instead of starting one")
    server = sub.add_parser("server", help="serve and register until SIGINT/SIGTERM")
    server.add_argument("--zk", help="ZooKeeper connect string (default: $RPC_ZK)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="0 picks a free port")
    server.add_argument("--weight", type=int, default=ServerConfig.weight)
    server.add_argument("--session-timeout", type=float, default=10.0,
                        help="ZooKeeper session timeout (seconds): how long a dead provider "
                        "stays registered")
    server.add_argument("--idle-timeout", type=float, default=ServerConfig.idle_timeout,
                        help="close a client silent this long (seconds)")
    server.add_argument("--min-ping-interval", type=float, default=ServerConfig.min_ping_interval,
                        help="clients may ping at most this often (seconds)")
    server.add_argument("--max-calls-per-api", type=int, default=None,
                        help="calls of one API running at once; past it, answer 'overloaded'")
    server.add_argument("--incidents", action="store_true",
                        help="serve the incident control (unlisted): incidents can then be "
                        "staged with the incident command; never on a provider users depend on")
    add_zk_auth_option(server)
    server.add_argument("--token", default="",
                        help="consumers must show this token, which they read from the "
                        "registry ('auto': a fresh random one)")
    add_limit_options(server)
    add_traceback_option(server)
    add_security_options(server, "serve over TLS with this certificate and key", provider=True)
    client = sub.add_parser("client", help="discover the providers and call them")
    client.add_argument("--zk", help="ZooKeeper connect string (default: $RPC_ZK)")
    client.add_argument("--lb", choices=sorted(STRATEGIES), default=DEFAULT_BALANCER)
    client.add_argument("--mode", choices=MODES, default="failfast",
                        help="what a failed call does (get_user is idempotent)")
    client.add_argument("--calls", type=int, default=10)
    client.add_argument("--json", action="store_true")
    add_security_options(client, "show this certificate and key to providers (mutual TLS)")
    incident = sub.add_parser("incident", help="stage an incident on a provider started with "
                              "--incidents")
    incident.add_argument("--at", required=True, help="the provider's HOST:PORT")
    incident.add_argument("kind", choices=("fail", "slow", "freeze", "heal"))
    incident.add_argument("--seconds", type=float, default=10.0, help="how long it lasts")
    incident.add_argument("--delay", type=float, default=1.0, help="slow: how late each call runs")
    config = sub.add_parser("config", help="read, write or follow an API's settings")
    config.add_argument("action", choices=("get", "set", "watch"))
    config.add_argument("source", nargs="?", help="set: a JSON file, or - for standard input")
    config.add_argument("--zk", help="ZooKeeper connect string (default: $RPC_ZK)")
    config.add_argument("--api", required=True, help="the API address, namespace/module.Interface")
    config.add_argument("--unchecked", action="store_true",
                        help="set: write without checking (consumers will refuse a bad one)")
    config.add_argument("--seconds", type=float, default=3600.0, help="watch: for how long")
    add_zk_auth_option(config)
    registry = sub.add_parser("registry", help="print the registry tree, or protect an API")
    registry.add_argument("action", nargs="?", choices=("tree", "protect"), default="tree",
                          help="protect: only holders of --zk-auth may register providers of "
                          "--api or write its settings; anyone may read")
    registry.add_argument("--zk", help="ZooKeeper connect string (default: $RPC_ZK)")
    registry.add_argument("--api", help="protect: the API address, namespace/module.Interface")
    add_zk_auth_option(registry)
    sub.add_parser("zookeeper", help="run a local ZooKeeper in the foreground")
    bench_cmd = sub.add_parser("bench", help="v3.x against v2.1, in the same run")
    bench_cmd.add_argument("--zk", help="use this ZooKeeper instead of starting one")
    bench_cmd.add_argument("--calls", type=int, default=None,
                           help="measured calls per level (default: short, or long with "
                           "RPC_BENCH=full)")
    bench_cmd.add_argument("--json", action="store_true")
    bench_cmd.add_argument("--costs", action="store_true",
                           help="what TLS, the token and metrics cost (v3.3), instead")
    bench_cmd.add_argument("--rounds", type=int, default=3, help="--costs: interleaved rounds")
    return parser


def add_zk_auth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zk-auth", default=os.environ.get(RPC_ZK_AUTH_ENV) or None,
                        metavar="USER:PASSWORD",
                        help="ZooKeeper digest credentials of protected APIs (default: "
                        f"${RPC_ZK_AUTH_ENV}, which keeps the password out of the process list)")


async def write_settings(hosts: str, api: str, data: bytes, credentials: str | None) -> int:
    """Write an API's settings document; with credentials, the node is protected."""
    registry = ZooKeeperRegistry(hosts, credentials=credentials)
    await registry.start()
    try:
        return await registry.write_config(api, data)
    finally:
        await registry.aclose()


async def protect(hosts: str, api: str, credentials: str) -> list[str]:
    registry = ZooKeeperRegistry(hosts, credentials=credentials)
    await registry.start()
    try:
        return await registry.protect(api)
    finally:
        await registry.aclose()


def add_security_options(parser: argparse.ArgumentParser, cert_help: str, *,
                         provider: bool = False) -> None:
    """Options of v3.3 shared by providers and consumers: metrics over HTTP and TLS."""
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on 127.0.0.1 at this port (0: a free one)")
    parser.add_argument("--tls-cert", help=cert_help + " (PEM files)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca", help="the CA that signs the other side's certificates")
    if provider:
        parser.add_argument("--tls-mutual", action="store_true",
                            help="refuse consumers without a certificate signed by --tls-ca")


def tls_of(args: argparse.Namespace) -> TlsConfig | None:
    """The TLS settings the options give, or None for plain TCP."""
    mutual = getattr(args, "tls_mutual", False)
    if not (args.tls_cert or args.tls_key or args.tls_ca or mutual):
        return None
    try:
        return TlsConfig(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca, mutual=mutual)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def serve_metrics(metrics: ClientMetrics | ServerMetrics, port: int) -> None:
    """Serve ``metrics`` over HTTP, and say where."""
    host, bound = metrics.serve(port)
    print(f"metrics on http://{host}:{bound}/metrics", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except RpcError as exc:  # a registry that refused or is unreachable, a bad setting...
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return asyncio.run(demo(args.zk))
    if args.command == "server":
        registry = ZooKeeperRegistry(zk_hosts(args.zk), session_timeout=args.session_timeout,
                                     credentials=args.zk_auth)
        config = ServerConfig(host=args.host, port=args.port, weight=args.weight,
                              idle_timeout=args.idle_timeout,
                              min_ping_interval=args.min_ping_interval,
                              send_tracebacks=args.send_tracebacks,
                              max_calls_per_api=args.max_calls_per_api, token=args.token,
                              tls=tls_of(args), **limit_settings(args))
        server = new_server(registry, config)
        if args.incidents:
            server.enable_incidents()
        if args.metrics_port is not None:
            metrics = ServerMetrics()
            metrics.attach(server)
            serve_metrics(metrics, args.metrics_port)
        asyncio.run(serve_until_signalled(server))
        return 0
    if args.command == "client":
        return asyncio.run(run_client(zk_hosts(args.zk), args.lb, args.mode, args.calls,
                                      args.json, tls=tls_of(args),
                                      metrics_port=args.metrics_port))
    if args.command == "incident":
        return stage_incident(args.at, args.kind, args.seconds, args.delay)
    if args.command == "config":
        return run_config(zk_hosts(args.zk), args.action, args.api, args.source, args.unchecked,
                          args.seconds, credentials=args.zk_auth)
    if args.command == "registry":
        if args.action == "protect":
            if not args.api or not args.zk_auth:
                raise SystemExit("error: registry protect needs --api and --zk-auth")
            for path in asyncio.run(protect(zk_hosts(args.zk), args.api, args.zk_auth)):
                print(f"protected {path}")
            return 0
        print(print_tree(zk_hosts(args.zk)))
        return 0
    if args.command == "zookeeper":
        return run_zookeeper()
    if args.command == "bench":
        if args.costs:
            return asyncio.run(bench_costs(args.zk, args.calls, args.rounds, args.json))
        return asyncio.run(bench(args.zk, args.calls, args.json))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
