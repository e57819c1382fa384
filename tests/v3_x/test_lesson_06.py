"""What notebook 06 (v3.2, fault tolerance) promises beyond the house rules every notebook keeps.

The rules shared by all notebooks are checked in ``tests/test_notebooks.py``; here, read from the
saved notebook: it is v3.2's lesson, its exercises have a cell to fill and a checking cell, it
names only loopback, and it shows the core code from the package instead of pasting it.
"""

from __future__ import annotations

import pytest

import stages.v3_x as v3_x
from tests.notebook_rules import Notebook, assert_exercises, assert_only_loopback

REFERENCE = "Reference answer"


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook("06_v3_2_fault_tolerance_breaker.ipynb")


def test_the_lesson_is_v3_2s_with_four_figures(notebook: Notebook) -> None:
    assert notebook.code and notebook.text.startswith("# v3.2: ")
    assert len(notebook.figures()) >= 4


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(notebook: Notebook) -> None:
    assert_exercises(notebook, REFERENCE)


def test_only_loopback_is_named(notebook: Notebook) -> None:
    assert_only_loopback(notebook)


def test_the_core_code_is_shown_from_the_package_never_pasted(notebook: Notebook) -> None:
    shown = notebook.shown()
    for name in ("CircuitBreaker.on_result", "OutlierDetector.failed", "Client._plan",
                 "Client._attempts",
                 "deadline.timed"):
        assert any(name in entry for entry in shown), (name, sorted(shown))
    assert callable(v3_x.CircuitBreaker.on_result) and callable(v3_x.OutlierDetector.failed)
    # Lines that carry the lesson appear only in outputs, never in a cell's source.
    code = "\n".join(notebook.code)
    for line in ("self._forget_trial(now - seconds)",
                 "duration = min(self.config.base_ejection * 2 ** (record.times - 1),"):
        assert line not in code, line
