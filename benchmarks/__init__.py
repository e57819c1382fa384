"""The benchmark suite: every stage next to gRPC, Pyro5, RPyC and the socket limit, in one run.

``make bench`` (or ``python -m benchmarks``) measures, on one machine and in one run, the same
workloads against:

* every stage of the walkthrough (v1.0, v2.0, v2.1, and v3.x with its registry, balancer,
  breakers and metrics all on), through the async proxy and (v2.1, v3.x) the blocking proxy,
  on asyncio's event loop and on uvloop;
* gRPC, both its asyncio API (``grpc.aio``) and its blocking one (``grpcio``);
* Pyro5 and RPyC, the Python RPCs a user would pick instead;
* a bare asyncio length-prefixed echo: the ceiling of any asyncio RPC on this machine (and a
  plain blocking socket against it, the reference of the blocking proxies).

It writes ``benchmarks/results.json`` and prints a Markdown table of ratios to ``grpc.aio`` and to
the echo. The modules, in the order the suite uses them:

* :mod:`~benchmarks.workloads`: the workloads, levels of calls in flight, call counts, and the
  combinations left out (and why);
* :mod:`~benchmarks.systems`: the registry of systems; :mod:`~benchmarks.servers` starts their
  servers, :mod:`~benchmarks.clients` makes their calls;
* :mod:`~benchmarks.measure`: one cell, measured once (warm-up, calls, CPU of both sides);
* :mod:`~benchmarks.suite`: the loop over the matrix, repeated and interleaved, and the results
  document with medians, spreads and ratios;
* :mod:`~benchmarks.report`: the Markdown tables, and issue 15's goals as measured.

``RPC_BENCH=short`` (the default) fits in 10 minutes on 2 cores; ``RPC_BENCH=full`` makes five
times the calls, in five repetitions. The Python peers and uvloop are an extra
(``pip install -r requirements-bench.lock``): without them the suite says what it could not run,
and runs the rest.

The names below are exported lazily (module ``__getattr__``): the servers run as
``python -m benchmarks.servers``, and importing the suite here would load that module once more
before it runs as ``__main__`` (runpy warns about exactly that), and make every server process
import the whole suite.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ECHO",
    "GRPC_AIO",
    "LEVELS",
    "Plan",
    "SYSTEMS",
    "System",
    "WORKLOADS",
    "Workload",
    "build_document",
    "markdown",
    "run_suite",
    "select",
]

# Which submodule defines each exported name (a tuple: nothing at module level is mutable).
_LAZY_EXPORTS: tuple[tuple[str, str], ...] = (
    ("ECHO", "systems"), ("GRPC_AIO", "systems"), ("SYSTEMS", "systems"), ("System", "systems"),
    ("select", "systems"), ("LEVELS", "workloads"), ("WORKLOADS", "workloads"),
    ("Workload", "workloads"), ("Plan", "suite"), ("build_document", "suite"),
    ("run_suite", "suite"), ("markdown", "report"),
)


def __getattr__(name: str) -> object:
    """Import the submodule that defines ``name`` on first use (see the module docstring)."""
    for exported, module in _LAZY_EXPORTS:
        if exported == name:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
