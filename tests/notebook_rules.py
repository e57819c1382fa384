"""Reading a saved notebook in tests: its cells, figures, exercises, and the code it shows.

nbval runs each notebook (``make test``); the house rules that every notebook keeps are checked
once for all of them in ``tests/test_notebooks.py``, and each lesson's own test reads the saved
notebook through :class:`Notebook` for what only that lesson promises.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IGNORE = "# NBVAL_IGNORE_OUTPUT"
#: A figure's caption: a markdown line starting "**Figure N:**" (or "**Figure N**:").
CAPTION = re.compile(r"^\*\*Figure (\d+)(?::\*\*|\*\*:)", re.M)


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


class Notebook:
    """One saved notebook, read without running it."""

    def __init__(self, name: str) -> None:
        self.path = NOTEBOOKS / name
        self.cells: list[dict[str, Any]] = json.loads(self.path.read_text(encoding="utf-8"))["cells"]

    def __repr__(self) -> str:
        return f"Notebook({self.path.name!r})"

    @cached_property
    def code(self) -> list[str]:
        """The source of every code cell, in order."""
        return [source(c) for c in self.cells if c["cell_type"] == "code"]

    @cached_property
    def text(self) -> str:
        """Every cell's source, markdown and code, as one string."""
        return "\n".join(source(c) for c in self.cells)

    def outputs(self) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
        for cell in self.cells:
            for output in cell.get("outputs", []):
                yield cell, output

    def figures(self) -> list[tuple[int, int]]:
        """(figure number, index of the code cell that draws it), in the order drawn.

        A figure is drawn by a code cell calling ``plt.subplots(``; its caption is the markdown
        cell right after it.
        """
        drawn = [i for i, c in enumerate(self.cells)
                 if c["cell_type"] == "code" and "plt.subplots(" in source(c)]
        return list(enumerate(drawn, start=1))

    def captions(self) -> list[int]:
        return [int(n) for c in self.cells if c["cell_type"] == "markdown"
                for n in CAPTION.findall(source(c))]

    def exercises(self, heading: str = r"^### Exercise \d") -> list[tuple[str, str]]:
        """(cell to fill, checking cell) after each markdown cell whose text matches ``heading``."""
        pairs = []
        for i, cell in enumerate(self.cells):
            if cell["cell_type"] == "markdown" and re.search(heading, source(cell), re.M):
                stub, check = self.cells[i + 1], self.cells[i + 2]
                assert stub["cell_type"] == check["cell_type"] == "code", source(cell)[:80]
                pairs.append((source(stub), source(check)))
        return pairs

    def shown(self) -> set[str]:
        """The dotted names the notebook prints with ``inspect.getsource``.

        Counts ``getsource(A.b)`` and the names of a loop ``for x in (A, B.c): ...getsource(x)``.
        """
        names: set[str] = set()
        for text in self.code:
            names.update(re.findall(r"getsource\(([\w.]+)\)", text))
            if "getsource(" in text:
                for group in re.findall(r"for \w+ in \(([^)]*)\)", text):
                    names.update(n.strip() for n in group.split(",") if n.strip())
        return names

    def functions(self, *names: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
        """The notebook's top-level functions called ``names``, defined from their own source."""
        scope = dict(namespace or {})
        wanted = set(names)
        for text in self.code:
            text = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
            tree = compile(text, str(self.path), "exec",
                           ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name in wanted:
                    exec(compile(ast.Module([node], []), str(self.path), "exec"), scope)
                    wanted.discard(node.name)
        assert not wanted, f"{self.path.name} defines no {sorted(wanted)}"
        return {name: scope[name] for name in names}


def all_notebooks() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def assert_exercises(notebook: Notebook, reference: str, *, count: range = range(2, 4)) -> None:
    """2 or 3 exercises, each a cell to fill holding a marked reference answer, then a cell that
    checks it (and holds no reference answer of its own)."""
    exercises = notebook.exercises()
    assert len(exercises) in count, len(exercises)
    for stub, check in exercises:
        assert reference in stub and reference not in check and "assert " in check, stub[:200]


def assert_only_loopback(notebook: Notebook) -> None:
    """The only address the notebook names is 127.0.0.1."""
    assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", notebook.text)) <= {"127.0.0.1"}
    assert "localhost" not in notebook.text
