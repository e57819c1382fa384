"""The shape of the repository: stages import only backwards, and never the notebooks."""

from __future__ import annotations

import ast
import pathlib

import pytest

from stages import stage_order

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"




def stage_dirs() -> list[pathlib.Path]:
    return sorted((p for p in STAGES.iterdir() if p.is_dir() and p.name.startswith("v")),
                  key=lambda p: stage_order(p.name))


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("stage", stage_dirs(), ids=lambda p: p.name)
def test_a_stage_imports_only_earlier_stages(stage: pathlib.Path) -> None:
    for path in stage.rglob("*.py"):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "notebooks":
                pytest.fail(f"{path.relative_to(ROOT)} imports the notebooks ({module})")
            if parts[0] == "stages" and len(parts) > 1 and parts[1].startswith("v"):
                assert stage_order(parts[1]) <= stage_order(stage.name), (
                    f"{path.relative_to(ROOT)} imports the later stage {module}")


def test_the_harness_imports_no_stage() -> None:
    for path in (STAGES / "harness").rglob("*.py"):
        for module in imported_modules(path):
            assert not module.startswith(("stages.v", "notebooks")), (
                f"{path.relative_to(ROOT)} imports {module}: the bench must not depend on a lesson")


@pytest.mark.parametrize("stage", stage_dirs(), ids=lambda p: p.name)
def test_every_stage_exports_its_version_and_a_command_line(stage: pathlib.Path) -> None:
    import importlib

    module = importlib.import_module(f"stages.{stage.name}")
    assert isinstance(module.STAGE, str) and isinstance(module.PROTOCOL_VERSION, int)
    assert (stage / "__main__.py").exists()
    for name in module.__all__:
        assert hasattr(module, name), f"stages.{stage.name}.__all__ names a missing {name}"


def test_stages_sort_by_version_with_a_letter_after_every_number() -> None:
    from stages.__main__ import latest_stage

    names = ["v3_x", "v1_0", "v2_1", "v10_0", "v2_0", "v3_0"]
    assert sorted(names, key=stage_order) == ["v1_0", "v2_0", "v2_1", "v3_0", "v3_x", "v10_0"]
    assert latest_stage() == max((p.name for p in stage_dirs()), key=stage_order)


def test_python_m_stages_passes_its_arguments_to_the_newest_stage() -> None:
    import subprocess
    import sys

    from stages.__main__ import latest_stage

    done = subprocess.run([sys.executable, "-m", "stages", "server", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"python -m stages.{latest_stage()}" in done.stdout and "--port" in done.stdout
    # Imported, a stage's __main__ does nothing: it runs only as a program.
    done = subprocess.run([sys.executable, "-c", "import stages.v2_1.__main__; print('ok')",
                           "demo"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok" and done.returncode == 0
