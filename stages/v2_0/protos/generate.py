"""Regenerate (or, with ``--check``, verify) the committed ``*_pb2.py`` modules of v2.0.

    python -m stages.v2_0.protos.generate          # rewrite the generated modules
    python -m stages.v2_0.protos.generate --check  # exit 1 if a committed module is stale

Each module comes with the ``*_pb2.pyi`` stub protoc writes beside it: the ``.py`` builds its
message classes at import time, so without the stub a type checker cannot see them.
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTOS = ["stages/v2_0/protos/rpc_envelope.proto", "stages/v2_0/user_stub/user.proto"]
SUFFIXES = ["_pb2.py", "_pb2.pyi"]  # the module and its type stub, both committed


def generate(out_dir: pathlib.Path) -> None:
    """Run protoc on every .proto of v2.0, writing the modules under ``out_dir``."""
    from grpc_tools import protoc  # a development dependency, needed only here

    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", *(str(ROOT / p) for p in PROTOS)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        stale = []
        for name in (proto.removesuffix(".proto") + s for proto in PROTOS for s in SUFFIXES):
            fresh, committed = pathlib.Path(tmp) / name, ROOT / name
            if args.check:
                if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                    stale.append(name)
            else:
                shutil.copyfile(fresh, committed)
                print(f"wrote {name}")
    if stale:
        print("stale generated modules (run python -m stages.v2_0.protos.generate):",
              *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
