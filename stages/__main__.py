"""``python -m stages demo|bench|...``: run the newest stage's command line with these arguments."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

import stages


def latest_stage() -> str:
    """Name of the newest stage package, in :func:`stages.stage_order`."""
    names = [m.name for m in pkgutil.iter_modules(stages.__path__) if m.name.startswith("v")]
    return max(names, key=stages.stage_order)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the newest stage's ``cli.main`` with ``argv`` (the command line's when None)."""
    cli = importlib.import_module(f"stages.{latest_stage()}.cli")
    stage_main: Callable[[Sequence[str] | None], int] = cli.main  # every stage's main has this type
    return stage_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
