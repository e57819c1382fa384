"""The package type-checks: ``mypy --strict`` over ``stages/``, as configured in pyproject.toml."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_stages_pass_strict_mypy() -> None:
    # From the repository root, so mypy reads [tool.mypy] (strict, files = ["stages"]) and reuses
    # its incremental cache in .mypy_cache: a warm run takes about a second, a cold one a few.
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
