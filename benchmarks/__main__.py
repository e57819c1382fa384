"""``python -m benchmarks``: run the suite, write ``benchmarks/results.json``, print the table.

::

    python -m benchmarks                                  # the whole matrix (RPC_BENCH=short)
    RPC_BENCH=full python -m benchmarks                   # longer cells, 5 repetitions
    python -m benchmarks --only v2_1,echo --workloads small --levels 1,64 --reps 2
    python -m benchmarks --only 'v2_1*,echo*,grpc-aio' --calls 200 --output /tmp/r.json

The table goes to standard output, progress to standard error. A cell that fails is data, not
the end of the run: its error is in the table, in the results and in a last line on standard
error, and the exit code stays 0 (``make bench`` still shows the table); 2 is for bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import markdown
from benchmarks.suite import Plan, run_suite
from benchmarks.systems import SYSTEMS, select
from benchmarks.workloads import LEVELS, WORKLOADS, repetitions

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="every stage, gRPC, Pyro5, RPyC and the bare asyncio echo, in one run")
    parser.add_argument("--only", help="comma-separated system ids or shell patterns "
                        f"(default: all): {', '.join(s.id for s in SYSTEMS)}")
    parser.add_argument("--workloads", help="comma-separated, default all: "
                        + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--levels", help="comma-separated calls in flight, default "
                        + ",".join(map(str, LEVELS)))
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3, or 5 "
                        "with RPC_BENCH=full)")
    parser.add_argument("--calls", type=int, help="measured calls of every cell, instead of "
                        "the run length's")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the options ask for.

    Raises:
        ValueError: an unknown system, workload or level, or a count below 1.
    """
    workload_names = _names(args.workloads)
    known = {w.name: w for w in WORKLOADS}
    for name in workload_names or ():
        if name not in known:
            raise ValueError(f"unknown workload {name!r} (known: {', '.join(known)})")
    levels = tuple(int(x) for x in _names(args.levels) or LEVELS)
    if any(level < 1 for level in levels) or len(set(levels)) != len(levels):
        raise ValueError(f"levels must be distinct integers >= 1, not {list(levels)}")
    if args.calls is None and not set(levels) <= set(LEVELS):
        raise ValueError(f"the run lengths know levels {','.join(map(str, LEVELS))}; for "
                         "others give --calls")
    for name, value in (("--reps", args.reps), ("--calls", args.calls)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, not {value}")
    workloads = tuple(known[n] for n in workload_names) if workload_names else WORKLOADS
    return Plan(systems=tuple(select(_names(args.only))), workloads=workloads, levels=levels,
                repetitions=repetitions(args.reps), calls=args.calls)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the document to a temporary file and rename it: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; results are for everyone to read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    document = run_suite(plan, log=(lambda line: None) if args.quiet else
                         (lambda line: print(line, file=sys.stderr, flush=True)))
    write_json(args.output, document)
    print(markdown(document))
    print(f"results: {args.output}", file=sys.stderr)
    failed = sorted({c["system"] for c in document["cells"] if c.get("failures")})
    if failed:
        print(f"cells failed for: {', '.join(failed)} (see the table)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
