"""The house rules every notebook keeps, read from the saved notebooks without running them.

nbval runs each notebook and compares what it prints; these checks cover what it cannot see: the
notebook was saved from one clean run, it stays a lesson's length, its figures are numbered and
check what they draw (nbval does not compare images), it never sleeps in the hope that something
happened, and its saved outputs name no paths of the machine that ran it.
"""

from __future__ import annotations

import re

import pytest

from tests.notebook_rules import IGNORE, Notebook, all_notebooks, source

#: "Keep each under ~45 cells": the first lesson carries two more, for its wire diagrams.
MAX_CELLS = 47


@pytest.fixture(scope="module", params=all_notebooks())
def notebook(request: pytest.FixtureRequest) -> Notebook:
    return Notebook(request.param)


def test_there_is_a_notebook_for_every_version() -> None:
    prefixes = {name.split("_")[0] for name in all_notebooks()}
    assert {"01", "02", "03", "04", "05", "06"} <= prefixes


def test_saved_from_one_clean_run_top_to_bottom(notebook: Notebook) -> None:
    counts = [c["execution_count"] for c in notebook.cells if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), "saved from one run, top to bottom"
    for cell, output in notebook.outputs():
        assert output["output_type"] != "error", source(cell)[:200]
        # Log lines are collected and shown on purpose, never left on stderr by accident.
        assert output.get("name") != "stderr", source(cell)[:200]


def test_a_lesson_not_a_report(notebook: Notebook) -> None:
    assert len(notebook.cells) <= MAX_CELLS
    assert notebook.cells[0]["cell_type"] == "markdown"
    assert source(notebook.cells[0]).startswith("# ")


def test_figures_are_numbered_and_assert_what_they_draw(notebook: Notebook) -> None:
    captions = notebook.captions()
    assert captions == list(range(1, len(captions) + 1)), captions
    drawn = notebook.figures()
    assert len(drawn) <= len(captions), "every figure has its caption"
    for number, i in drawn:
        text = source(notebook.cells[i])
        assert text.startswith(IGNORE), f"figure {number}: nbval cannot compare its image"
        assert re.search(r"^\s*assert ", text, re.M), f"figure {number} asserts nothing"


def test_nothing_sleeps_in_the_hope_that_something_happened(notebook: Notebook) -> None:
    for text in notebook.code:
        assert "time.sleep(" not in text, text[:200]


def test_printed_source_is_marked_as_varying(notebook: Notebook) -> None:
    # The listing is the package's source as it is today: nbval must not pin yesterday's.
    for text in notebook.code:
        if re.search(r"^\s*print\(inspect\.getsource\(", text, re.M):
            assert text.startswith(IGNORE), text[:200]


def test_saved_outputs_name_no_machine_paths(notebook: Notebook) -> None:
    for cell, output in notebook.outputs():
        text = str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        assert not re.search(r"/(tmp|work|home|root)/", text), source(cell)[:200]
