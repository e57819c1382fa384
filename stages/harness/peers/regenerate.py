"""Regenerate the committed protobuf/gRPC modules of the gRPC peer from ``bench_echo.proto``.

Usage::

    python -m stages.harness.peers.regenerate          # rewrite the generated files
    python -m stages.harness.peers.regenerate --check  # exit 1 if they are out of date (CI)

The command it runs, from the repository root, is exactly::

    python -m grpc_tools.protoc -I . --python_out=OUT --pyi_out=OUT --grpc_python_out=OUT \\
        stages/harness/peers/bench_echo.proto

Why ``-I .`` and the path from the root: protoc names generated imports after the proto's path
*relative to its include directory*. Compiled as plain ``bench_echo.proto``, the gRPC module says
``import bench_echo_pb2``, which only works with this directory on ``sys.path``; compiled as
``stages/harness/peers/bench_echo.proto`` it says ``from stages.harness.peers import
bench_echo_pb2`` and works as a normal package import. The same path also names the file in
protobuf's global descriptor pool, so it cannot clash with another ``bench_echo.proto``.

The output is written to a temporary directory first and copied over only if protoc succeeded,
so a failed run never leaves half-updated files. The generated code depends on the
``grpcio-tools`` version (it is stamped into the files): regenerate with the version pinned in
``requirements.lock``, otherwise ``--check`` reports a difference.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "ROOT", "differences", "generate", "main", "protoc_command"]

ROOT = Path(__file__).resolve().parents[3]
"""The directory that contains the ``stages`` package (``-I .`` is relative to it)."""

PROTO = "stages/harness/peers/bench_echo.proto"
"""The proto file, relative to :data:`ROOT`: this path becomes the generated import path."""

GENERATED = ("bench_echo_pb2.py", "bench_echo_pb2.pyi", "bench_echo_pb2_grpc.py")
"""The files protoc writes next to the proto, all committed."""


def protoc_command(out_dir: Path | str) -> list[str]:
    """The protoc command line that writes the generated modules under ``out_dir``.

    Run it with the working directory set to :data:`ROOT`. The files land in
    ``out_dir/stages/harness/peers/`` (protoc mirrors the proto's path under the output dir).
    """
    return [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I", ".",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]


def generate(out_dir: Path) -> Path:
    """Run protoc into ``out_dir`` and return the directory holding the generated files.

    Raises:
        subprocess.CalledProcessError: protoc failed (its stderr is in the exception).
    """
    subprocess.run(protoc_command(out_dir), cwd=ROOT, check=True, capture_output=True, text=True)
    return out_dir / Path(PROTO).parent


def differences() -> list[str]:
    """Regenerate into a temporary directory and compare with the committed files.

    Returns:
        One unified diff (or "missing" note) per generated file that differs; empty if all
        committed files are exactly what protoc writes today.
    """
    committed_dir = ROOT / Path(PROTO).parent
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="regenerate-") as tmp:
        fresh_dir = generate(Path(tmp))
        for name in GENERATED:
            fresh = (fresh_dir / name).read_text()
            committed_path = committed_dir / name
            if not committed_path.exists():
                problems.append(f"{committed_path.relative_to(ROOT)} is missing")
                continue
            committed = committed_path.read_text()
            if committed != fresh:
                diff = difflib.unified_diff(
                    committed.splitlines(keepends=True), fresh.splitlines(keepends=True),
                    fromfile=f"committed/{name}", tofile=f"regenerated/{name}")
                problems.append("".join(diff))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (1: ``--check`` found drift)."""
    parser = argparse.ArgumentParser(prog="python -m stages.harness.peers.regenerate",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary directory; exit 1 if anything differs")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("generated files are out of date: run python -m stages.harness.peers.regenerate",
                  file=sys.stderr)
            return 1
        print("generated files are up to date")
        return 0
    target = ROOT / Path(PROTO).parent
    with tempfile.TemporaryDirectory(prefix="regenerate-") as tmp:
        fresh_dir = generate(Path(tmp))
        for name in GENERATED:
            shutil.copyfile(fresh_dir / name, target / name)
            print(f"wrote {(target / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
