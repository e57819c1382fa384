"""Notebook 06 (v3.2, fault tolerance) keeps the house rules, read from the saved notebook.

nbval runs the notebook itself (``make test``); these checks read it without running it: its
shape (cells, numbered and captioned figures that assert what they draw, exercises with a cell to
fill and a checking cell), and what must never be in it (sleeping to wait, addresses other than
loopback, pasted copies of the package's code, machine paths in saved outputs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import stages.v3_x as v3_x

NOTEBOOK = (Path(__file__).resolve().parents[2] / "notebooks"
            / "06_v3_2_fault_tolerance_breaker.ipynb")
IGNORE = "# NBVAL_IGNORE_OUTPUT"
REFERENCE = "Reference answer"


@pytest.fixture(scope="module")
def cells() -> list[dict[str, Any]]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def code(cells: list[dict[str, Any]]) -> list[str]:
    return [source(c) for c in cells if c["cell_type"] == "code"]


def test_the_lesson_is_short_and_every_saved_cell_ran_cleanly(cells: list[dict[str, Any]]) -> None:
    assert len(cells) <= 45
    assert source(cells[0]).startswith("# v3.2: ")
    counts = [c["execution_count"] for c in cells if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), "saved from one run, top to bottom"
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", source(cell)[:200]


def test_figures_are_numbered_captioned_ignored_and_checked(cells: list[dict[str, Any]]) -> None:
    captions = [int(n) for c in cells if c["cell_type"] == "markdown"
                for n in re.findall(r"\*\*Figure (\d+):\*\*", source(c))]
    assert captions == list(range(1, len(captions) + 1)) and len(captions) >= 4
    figure_cells = [i for i, c in enumerate(cells)
                    if c["cell_type"] == "code" and "plt.subplots(" in source(c)]
    assert len(figure_cells) == len(captions)
    for number, i in enumerate(figure_cells, start=1):
        text = source(cells[i])
        assert text.startswith(IGNORE) and "assert " in text, f"figure {number}"
        assert f"**Figure {number}:**" in source(cells[i + 1])


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(cells: list[dict[str, Any]]) -> None:
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                 and re.search(r"^### Exercise \d", source(c), re.M)]
    assert 2 <= len(exercises) <= 3
    for i in exercises:
        stub, check = cells[i + 1], cells[i + 2]
        assert stub["cell_type"] == check["cell_type"] == "code"
        assert REFERENCE in source(stub) and "assert " in source(check)


def test_nothing_sleeps_to_wait_and_only_loopback_is_named(cells: list[dict[str, Any]]) -> None:
    assert "time.sleep(" not in "\n".join(code(cells))
    text = "\n".join(source(c) for c in cells)
    assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)) <= {"127.0.0.1"}
    assert "localhost" not in text


def test_the_core_code_is_shown_from_the_package_never_pasted(cells: list[dict[str, Any]]) -> None:
    text = "\n".join(code(cells))
    shown = set(re.findall(r"getsource\(([\w.]+)\)", text))
    for group in re.findall(r"for \w+ in \(([^)]*)\)", text):
        shown.update(name.strip() for name in group.split(",") if name.strip())
    assert "inspect.getsource" in text
    for name in ("CircuitBreaker.on_result", "OutlierDetector.failed", "Client._attempts",
                 "deadline.timed"):
        assert any(name in entry for entry in shown), (name, sorted(shown))
    assert callable(v3_x.CircuitBreaker.on_result) and callable(v3_x.OutlierDetector.failed)
    # Lines that carry the lesson appear only in outputs, never in a cell's source.
    for line in ("self._forget_trial(now - seconds)",
                 "duration = min(self.config.base_ejection * 2 ** (record.times - 1),"):
        assert line not in text, line


def test_saved_outputs_name_no_machine_paths(cells: list[dict[str, Any]]) -> None:
    for cell in cells:
        for output in cell.get("outputs", []):
            text = json.dumps(output.get("text", "")) + json.dumps(
                output.get("data", {}).get("text/plain", ""))
            assert not re.search(r"/(tmp|work|home|root)/", text), source(cell)[:200]
