"""The servers of the suite, one command for all: each runs as its own process.

::

    python -m benchmarks.servers server --host 127.0.0.1 --port 0 --system NAME [--loop uvloop]
                                        [--zk HOST:PORT]

It prints ``listening on HOST:PORT`` once bound (what
:class:`~stages.harness.process.ServerProcess` waits for) and serves until SIGTERM or SIGINT.

====================  =========================================================================
``--system``          what serves
====================  =========================================================================
``v1_0`` … ``v2_1``   the stage's own demo server, built by its ``cli.new_server`` exactly as
                      ``python -m stages.<stage> server`` builds it, on the chosen event loop
``v3_x``              the same for v3.x, registered in the ZooKeeper of ``--zk``, with its
                      Prometheus metrics attached and served (as ``--metrics-port 0`` does)
``echo``              the bare asyncio echo of :mod:`stages.harness.peers.echo_peer`, on the
                      chosen event loop
``grpc_sync``         the same ``Bench`` service as the ``grpc.aio`` peer, on gRPC's blocking
                      server (a thread pool of 64: the most threads the suite calls with)
``pyro5``             a Pyro5 daemon (thread pool server, default serializer: serpent)
``rpyc``              an RPyC ``ThreadedServer`` (a thread per connection)
====================  =========================================================================

Why one command with ``--loop`` instead of each stage's own ``server`` command: the stages run
``asyncio.run``, and the suite also measures them on uvloop. Both loops go through this one
path, so the only difference between the two measurements is the loop.

The Python peers expose the same two calls as the stages' demo APIs: ``get_user(id)`` (the
v2.0 provider's user, as a dict for Pyro5 and a tuple for RPyC, whose dicts would travel by
reference, one round trip per field) and ``echo(data)`` (bytes back, made real bytes on the
server: Pyro5's serpent carries bytes as base64 text, decoded with ``serpent.tobytes``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from typing import Any, Final

__all__ = ["ASYNC_SYSTEMS", "LOOPS", "SYNC_SYSTEMS", "main", "new_loop_factory"]

ASYNC_SYSTEMS: Final = ("v1_0", "v2_0", "v2_1", "v3_x", "echo")
SYNC_SYSTEMS: Final = ("grpc_sync", "pyro5", "rpyc")
LOOPS: Final = ("asyncio", "uvloop")

#: Threads of the blocking gRPC server and of the Pyro5 pool: at least the most calls in
#: flight a thread-per-call system is measured with (see benchmarks.workloads).
POOL_THREADS: Final = 64


def new_loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``asyncio.Runner``: None for asyncio's default loop.

    Raises:
        ModuleNotFoundError: ``loop`` is ``"uvloop"`` and uvloop is not installed.
    """
    if loop == "asyncio":
        return None
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"unknown event loop {loop!r}")


# -- asyncio servers: the stages and the echo ------------------------------------------------


async def serve_stage(system: str, host: str, port: int, zk: str | None) -> None:
    """Build the stage's demo server as its command line does, and serve until signalled."""
    from stages.v1_0.cli import serve_until_signalled

    server: Any
    if system == "v1_0":
        from stages.v1_0 import ServerConfig as V10Config
        from stages.v1_0.cli import new_server as new_v1_0

        server = new_v1_0(V10Config(host=host, port=port))
    elif system == "v2_0":
        from stages.v2_0 import ServerConfig as V20Config
        from stages.v2_0.cli import new_server as new_v2_0

        server = new_v2_0(V20Config(host=host, port=port))
    elif system == "v2_1":
        from stages.v2_1 import ServerConfig as V21Config
        from stages.v2_1.cli import new_server as new_v2_1

        server = new_v2_1(V21Config(host=host, port=port))
    elif system == "v3_x":
        from stages.v3_x import ServerConfig as V3Config
        from stages.v3_x import ZooKeeperRegistry
        from stages.v3_x.cli import new_server as new_v3_x
        from stages.v3_x.metrics import ServerMetrics

        if not zk:
            raise SystemExit("--system v3_x needs --zk HOST:PORT")
        server = new_v3_x(ZooKeeperRegistry(zk), V3Config(host=host, port=port))
        metrics = ServerMetrics()
        metrics.attach(server)
        metrics_host, metrics_port = metrics.serve(0)
        print(f"metrics on http://{metrics_host}:{metrics_port}/metrics", flush=True)
    else:
        raise ValueError(f"not a stage: {system!r}")
    await serve_until_signalled(server)


async def serve_echo(host: str, port: int) -> None:
    """The bare asyncio echo, as ``python -m stages.harness.peers.echo_peer server`` runs it."""
    from stages.harness.peers import stop_signal
    from stages.harness.peers.echo_peer import EchoServer

    with stop_signal() as stop:
        async with EchoServer(host, port) as server:
            bound_host, bound_port = server.address
            print(f"listening on {bound_host}:{bound_port}", flush=True)
            await stop.wait()


def run_async(serve: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``serve`` on a new event loop of the chosen kind."""
    with asyncio.Runner(loop_factory=new_loop_factory(loop)) as runner:
        runner.run(serve)


# -- blocking servers: gRPC's, Pyro5, RPyC --------------------------------------------------


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, which every blocking server below stops on."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _user(user_id: int) -> Any:
    """The v2.0 provider's user with this id (the same data every stage answers)."""
    from stages.v2_0.provider import UserApiImpl

    return UserApiImpl().get_user(user_id)


def serve_grpc_sync(host: str, port: int) -> None:
    """gRPC's blocking server with the ``Bench`` service of the ``grpc.aio`` peer."""
    import grpc

    from stages.harness.peers import bench_echo_pb2_grpc
    from stages.harness.peers.grpc_peer import MAX_MESSAGE, make_user

    class BlockingBench(bench_echo_pb2_grpc.BenchServicer):
        def GetUser(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
            return make_user(request.id)

        def Echo(self, request: Any, context: Any) -> Any:  # noqa: N802
            return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=POOL_THREADS), options=[
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ])
    bench_echo_pb2_grpc.add_BenchServicer_to_server(  # type: ignore[no-untyped-call]
        BlockingBench(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    _stop_on_sigterm()
    print(f"listening on {host}:{bound}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(0).wait()


def serve_pyro5(host: str, port: int) -> None:
    """A Pyro5 daemon serving ``bench`` (object id) with ``get_user`` and ``echo``."""
    import Pyro5.api  # type: ignore[import-untyped]
    import serpent  # type: ignore[import-untyped]

    # Pyro5's configuration is global (the habit our style guide names as one to avoid); in
    # this process of its own that does no harm. Nagle off, as asyncio sets it for every
    # other system here; a pool as large as the most threads the suite calls with.
    Pyro5.config.SOCK_NODELAY = True
    Pyro5.config.THREADPOOL_SIZE = POOL_THREADS * 2

    @Pyro5.api.expose
    class PyroBench:
        def get_user(self, user_id: int) -> dict[str, Any]:
            return dataclasses.asdict(_user(user_id))

        def echo(self, data: Any) -> bytes:
            return serpent.tobytes(data)  # type: ignore[no-any-return]

    _stop_on_sigterm()
    with Pyro5.api.Daemon(host=host, port=port) as daemon:
        daemon.register(PyroBench(), objectId="bench")
        print(f"listening on {daemon.locationStr}", flush=True)
        try:
            daemon.requestLoop()
        except KeyboardInterrupt:
            pass


def serve_rpyc(host: str, port: int) -> None:
    """An RPyC ``ThreadedServer`` with ``get_user`` and ``echo`` exposed."""
    import rpyc  # type: ignore[import-untyped]
    from rpyc.utils.server import ThreadedServer  # type: ignore[import-untyped]

    class RpycBench(rpyc.Service):  # type: ignore[misc]
        def exposed_get_user(self, user_id: int) -> tuple[Any, ...]:
            return dataclasses.astuple(_user(user_id))

        def exposed_echo(self, data: bytes) -> bytes:
            return data

    server = ThreadedServer(RpycBench, hostname=host, port=port,
                            protocol_config={"sync_request_timeout": 60})
    _stop_on_sigterm()
    print(f"listening on {host}:{server.port}", flush=True)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


# -- the command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers",
                                     description="a server of the benchmark suite")
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="serve until SIGINT/SIGTERM")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0, help="0 picks a free port")
    server.add_argument("--system", required=True, choices=ASYNC_SYSTEMS + SYNC_SYSTEMS)
    server.add_argument("--loop", choices=LOOPS, default="asyncio",
                        help="event loop of the asyncio servers")
    server.add_argument("--zk", help="ZooKeeper connect string (v3_x)")
    args = parser.parse_args(argv)
    if args.system == "echo":
        run_async(serve_echo(args.host, args.port), args.loop)
    elif args.system in ASYNC_SYSTEMS:
        run_async(serve_stage(args.system, args.host, args.port, args.zk), args.loop)
    elif args.system == "grpc_sync":
        serve_grpc_sync(args.host, args.port)
    elif args.system == "pyro5":
        serve_pyro5(args.host, args.port)
    else:
        serve_rpyc(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
