"""What notebook 00 (the overview) promises beyond the house rules every notebook keeps.

The rules shared by all notebooks are checked in ``tests/test_notebooks.py``; here, read from the
saved notebook: it tells every version's story, its glossary defines the terms a reader meets and
names modules that exist, its map of the code is computed from the packages (never pasted), it
measures every version in one run and prints the machine and run length with the figure, its
exercises have a cell to fill and a checking cell, it names only loopback, and it stops what it
starts.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

import stages.v1_0 as v1_0
from stages.v2_1 import client as client_2_1
from stages.v3_x import client as client_3_x
from tests.notebook_rules import IGNORE, Notebook, source

REFERENCE = "Reference answer"
#: The glossary's terms that issue 13 lists by name.
TERMS = ("frame", "codec", "serializer", "stub", "address", "proxy", "multiplexing", "heartbeat",
         "GOAWAY", "registry", "session", "breaker")


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook("00_overview.ipynb")


def markdown(notebook: Notebook) -> str:
    return "\n".join(source(c) for c in notebook.cells if c["cell_type"] == "markdown")


def test_the_overview_tells_every_versions_story_with_two_figures(notebook: Notebook) -> None:
    assert notebook.text.startswith("# Overview")
    prose = markdown(notebook)
    for version in ("v1.0", "v2.0", "v2.1", "v3.0", "v3.1", "v3.2", "v3.3"):
        assert f"**{version}: " in prose, version  # one paragraph per version
    assert prose.count("*Problem:*") == prose.count("*Cost:*") == 7
    assert len(notebook.figures()) == 2


def test_the_glossary_defines_every_term_and_names_real_modules(notebook: Notebook) -> None:
    [glossary] = [source(c) for c in notebook.cells
                  if c["cell_type"] == "markdown" and source(c).startswith("## 5. Glossary")]
    rows = {}
    for line in glossary.splitlines():
        if line.startswith("| **"):
            term, meaning, _since, where = (part.strip() for part in line.strip("|").split("|"))
            rows[term.strip("*")] = (meaning, where)
    assert set(TERMS) <= set(rows), set(TERMS) - set(rows)
    for term, (meaning, where) in rows.items():
        module_name, *names = re.findall(r"`([\w.]+)`", where)
        module = importlib.import_module(module_name)
        assert names and all(hasattr(module, name) for name in names), (term, where)
        assert meaning.count(". ") <= 1, f"{term}: one or two sentences"
    # The notebook checks the glossary itself, by reading it back and importing each module.
    assert any("importlib.import_module(module_name)" in text and "Glossary" in text
               for text in notebook.code)


def test_the_code_map_is_computed_from_the_packages_never_pasted(notebook: Notebook) -> None:
    code = "\n".join(notebook.code)
    for tool in ("pkgutil.iter_modules(", "ast.parse(inspect.getsource(", "stage_diff(",
                 "show_mro("):
        assert tool in code, tool
    # Lines that carry the diffs are the package's, and appear only in outputs, never in a cell.
    for obj, line in ((client_2_1.Client.exchange,
                       "return await self.endpoint.exchange(request, self._timeout(timeout))"),
                      (client_3_x.Client._send, "policy = self.policy_for(call)"),
                      (client_3_x.Client._send, 'if policy.mode == "forking":')):
        assert line in inspect.getsource(obj), line
        assert line not in code, line
    assert "PING = 3" not in code and "class FrameType" not in code
    assert v1_0.FrameType.REQUEST == 1
    # Cells that print live source, diffs or the computed map are marked as varying.
    for text in notebook.code:
        if re.search(r"print\((stage_diff|show_mro)\(", text) or "pkgutil.iter_modules(" in text:
            assert text.startswith(IGNORE), text[:200]


def test_every_version_is_measured_in_one_run_and_the_figure_says_where(notebook: Notebook) -> None:
    code = "\n".join(notebook.code)
    for package in ("stages.v1_0", "stages.v2_0", "stages.v2_1", "stages.v3_x"):
        assert f'ServerProcess("{package}"' in code, package
    assert "resolve_zookeeper()" in code and "ZooKeeperRegistry(hosts)" in code
    assert "measure_sequential(" in code and "measure_closed_loop(" in code
    assert "run_length(" in code
    # The machine and the run length are printed by the run itself, next to the figure.
    printed = "".join(str(output.get("text", "")) for _, output in notebook.outputs())
    assert re.search(r"machine: \d+ cores, Python 3\.\d+", printed), printed[-500:]
    assert re.search(r"(short|full) run: ", printed)
    assert re.search(r"\*\*Figure 2:\*\*.*machine \(cores, Python version\) and the run length",
                     markdown(notebook), re.S)


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(notebook: Notebook) -> None:
    exercises = notebook.exercises()
    assert len(exercises) == 2
    for stub, check in exercises:
        assert REFERENCE in stub and "assert " in check


def test_only_loopback_is_named(notebook: Notebook) -> None:
    assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", notebook.text)) <= {"127.0.0.1"}
    assert "localhost" not in notebook.text


def test_the_last_code_cell_stops_what_the_notebook_started(notebook: Notebook) -> None:
    last = notebook.code[-1]
    assert "resources.close()" in last and "aclose()" in last
    assert "poll() is not None" in last
    code = "\n".join(notebook.code)
    assert "atexit.register(resources.close)" in code
