"""What notebook 08 (performance across the stages) promises beyond the house rules.

The rules shared by all notebooks are checked in ``tests/test_notebooks.py``; here, read from the
saved notebook: it measures by running the benchmark suite (never by pasting numbers), its slice
names every stage and every peer, Pyro5 and RPyC included whether installed or not, its run length
follows ``RPC_BENCH`` and its measurements are marked as varying, it asserts the orderings it
claims, it profiles v3.x through ``benchmarks.breakdown`` and shows that code from the package,
its prose quotes no measured figure, its exercises have a cell to fill and a checking cell, it
names only loopback, and it checks that nothing it started is left running.
"""

from __future__ import annotations

import inspect
import re

import pytest

from benchmarks import breakdown
from benchmarks.systems import SYSTEMS
from tests.notebook_rules import IGNORE, Notebook, assert_exercises, assert_only_loopback, source

REFERENCE = "Reference answer"


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook("08_performance_across_stages.ipynb")


def markdown(notebook: Notebook) -> str:
    return "\n".join(source(c) for c in notebook.cells if c["cell_type"] == "markdown")


def test_the_lesson_compares_the_stages_in_five_figures(notebook: Notebook) -> None:
    assert notebook.text.startswith("# Performance across the stages")
    assert len(notebook.figures()) == len(notebook.captions()) == 5
    # Anything timed, or whose size the run length sets, varies from run to run.
    for text in notebook.code:
        if re.search(r"run_length\(|run_suite\(|where_time_goes\(", text):
            assert text.startswith(IGNORE), text[:200]


def test_it_measures_with_the_suite_on_every_stage_and_every_peer(notebook: Notebook) -> None:
    code = "\n".join(notebook.code)
    for used in ("run_suite, plan", "Plan(", "select(SYSTEMS)", "repetitions()",
                 "run_length(", "pair_ratio(", "where_time_goes("):
        assert used in code, used
    [slice_cell] = [text for text in notebook.code if text.count("SYSTEMS = (") == 1]
    named = set(re.findall(r'"([\w-]+)"', slice_cell.split("SYSTEMS = (", 1)[1].split(")", 1)[0]))
    known = {system.id for system in SYSTEMS}
    assert named <= known, named - known
    assert {"echo", "echo-socket", "v1_0", "v2_0", "v2_1", "v2_1-blocking", "v3_x", "grpc-aio",
            "pyro5", "rpyc"} <= named
    # The prose says the Python peers appear only with the extra installed.
    assert "requirements-bench.lock" in notebook.text and "not run" in markdown(notebook)


def test_the_orderings_it_claims_are_asserted(notebook: Notebook) -> None:
    code = "\n".join(notebook.code)
    for claim in ('tps64["v2_1", "small"] > 3 * tps64["v2_0", "small"]',
                  'tps64["v2_1", workload] > tps64["grpc-aio", workload]',
                  'tps64[system, workload] < tps64["echo", workload]',
                  'best["v2_1"] < 0.8 * best["v2_0"]',
                  'best["echo-socket"] < best[system] < 0.8 * best["v2_0"]',
                  'cpu["v2_1"] < cpu["v2_0"] / 3',
                  "assert big > 4 * mid"):
        assert claim in code, claim


def test_numbers_come_from_the_run_never_from_the_prose(notebook: Notebook) -> None:
    prose = markdown(notebook)
    # No measured figure in the text: no rates, durations or ratios written out by hand.
    assert not re.search(r"\d[\d,.]*\s*(?:calls/s|µs|ms|%)|\bx\s?\d|\d+(?:\.\d+)?×", prose), \
        re.findall(r".{30}\d[\d,.]*\s*(?:calls/s|µs|ms|%).{10}", prose)
    assert "median(" in "\n".join(notebook.code)


def test_the_breakdown_is_shown_from_the_package_never_pasted(notebook: Notebook) -> None:
    assert "own_time_by_layer" in notebook.shown()
    shown = inspect.getsource(breakdown.own_time_by_layer)
    code = "\n".join(notebook.code)
    # Lines that carry the lesson are the package's, and appear only in outputs.
    for line in ("spent = sum(entry[2] for entry in callers.values())",
                 "elif any(wait in key[2] for wait in _WAITS):"):
        assert line in shown, line
        assert line not in code, line


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(notebook: Notebook) -> None:
    assert_exercises(notebook, REFERENCE)


def test_only_loopback_is_named(notebook: Notebook) -> None:
    assert_only_loopback(notebook)


def test_the_last_code_cell_checks_nothing_is_left_running(notebook: Notebook) -> None:
    last = notebook.code[-1]
    assert '"/proc"' in last and "os.getpid()" in last and "threading.enumerate()" in last
    assert "join(timeout=" in last  # waits for threads to end, never sleeps hoping they did
    assert "removeHandler(warnings_seen)" in last
