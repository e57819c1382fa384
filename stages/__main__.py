"""``python -m stages demo|bench|...``: run the newest stage's command line."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable

import stages


def latest_stage() -> str:
    """Name of the newest stage package (``v2_1`` sorts after ``v2_0`` and ``v1_0``)."""
    names = [m.name for m in pkgutil.iter_modules(stages.__path__) if m.name.startswith("v")]
    return max(names, key=lambda n: tuple(int(p) if p.isdigit() else -1 for p in n[1:].split("_")))


def main(argv: list[str] | None = None) -> int:
    name = latest_stage()
    cli = importlib.import_module(f"stages.{name}.__main__")
    stage_main: Callable[[list[str] | None], int] = cli.main  # every stage's main has this type
    return stage_main(argv)


if __name__ == "__main__":
    sys.exit(main())
