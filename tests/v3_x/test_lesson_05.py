"""Notebook 05 (v3.1, load balancing) keeps the house rules, and its helpers are right.

nbval runs the notebook itself (``make test``); these checks read the saved notebook without
running it: its shape (cells, figures and captions, exercises), what must never be in it (unseeded
randomness, sleeping to wait, addresses other than loopback, pasted copies of the package's code,
machine paths in saved outputs), and the helpers and reference answers it defines, taken out of
the notebook and run on more inputs than the notebook gives them.
"""

from __future__ import annotations

import ast
import bisect
import collections
import hashlib
import itertools
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

import stages.v3_x as v3_x
from stages.v3_x.balancer import Candidate, LeastActiveBalancer, _hash

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05_v3_1_load_balancing.ipynb"
IGNORE = "# NBVAL_IGNORE_OUTPUT"
REFERENCE = "Reference answer: replace this with your own."


@pytest.fixture(scope="module")
def cells() -> list[dict[str, Any]]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def code_cells(cells: list[dict[str, Any]]) -> list[str]:
    return [source(c) for c in cells if c["cell_type"] == "code"]


def functions(cells: list[dict[str, Any]], *names: str) -> dict[str, Any]:
    """The notebook's top-level functions called ``names``, defined from their own source."""
    namespace: dict[str, Any] = {"math": math, "random": random, "collections": collections,
                                 "itertools": itertools, "hashlib": hashlib, "bisect": bisect,
                                 "Candidate": Candidate}
    wanted = set(names)
    for text in code_cells(cells):
        text = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
        tree = compile(text, str(NOTEBOOK), "exec",
                       ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in wanted:
                exec(compile(ast.Module([node], []), str(NOTEBOOK), "exec"), namespace)
                wanted.discard(node.name)
    assert not wanted, f"the notebook defines no {sorted(wanted)}"
    return {name: namespace[name] for name in names}


# -- shape -----------------------------------------------------------------------------------


def test_the_lesson_is_short_and_every_saved_cell_ran_cleanly(cells: list[dict[str, Any]]) -> None:
    assert len(cells) <= 45
    assert source(cells[0]).startswith("# v3.1: ")
    counts = [c["execution_count"] for c in cells if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), "saved from one run, top to bottom"
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", source(cell)[:200]
            assert output.get("name") != "stderr", source(cell)[:200]


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
        assert any(o["output_type"] == "display_data" and "image/png" in o["data"]
                   for o in cells[i]["outputs"]), f"figure {number} was saved"
        # The caption is the markdown cell right after the figure.
        assert f"**Figure {number}:**" in source(cells[i + 1])


def test_cells_whose_output_varies_are_ignored(cells: list[dict[str, Any]]) -> None:
    # Printed live source, measurements, timings, and anything whose size the run length sets.
    varying = ("print(inspect.getsource(", "print(inspect.getdoc(", "measure_closed_loop(",
               "timeit.", "await run_strategy(", "run_length(")
    for text in code_cells(cells):
        if any(marker in text for marker in varying):
            assert text.startswith(IGNORE), text[:200]


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(cells: list[dict[str, Any]]) -> None:
    exercises = [i for i, c in enumerate(cells)
                 if c["cell_type"] == "markdown" and re.search(r"^### Exercise \d", source(c), re.M)]
    assert 2 <= len(exercises) <= 3
    for i in exercises:
        stub, check = cells[i + 1], cells[i + 2]
        assert stub["cell_type"] == check["cell_type"] == "code"
        assert REFERENCE in source(stub) and REFERENCE not in source(check)
        assert "assert " in source(check)


# -- what must never be in it ------------------------------------------------------------------


def test_randomness_is_seeded_and_nothing_sleeps_to_wait(cells: list[dict[str, Any]]) -> None:
    text = "\n".join(code_cells(cells))
    assert "random.Random(" in text
    assert not re.search(r"random\.Random\(\s*\)", text), "an unseeded random.Random()"
    assert not re.search(r"\brandom\.(random|choice|choices|randrange|randint|sample|shuffle)\(",
                         text), "the module-level random source is not seeded"
    assert "time.sleep(" not in text


def test_only_loopback_is_named(cells: list[dict[str, Any]]) -> None:
    text = "\n".join(source(c) for c in cells)
    assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)) == {"127.0.0.1"}
    assert "localhost" not in text


def test_the_core_code_is_shown_from_the_package_never_pasted(cells: list[dict[str, Any]]) -> None:
    text = "\n".join(code_cells(cells))
    shown: set[str] = set()
    for cell_text in code_cells(cells):
        shown.update(re.findall(r"getsource\(([\w.]+)\)", cell_text))
        if "getsource(obj)" in cell_text:  # for obj in (A, B.pick, ...): print(getsource(obj))
            for group in re.findall(r"for obj in \(([^)]*)\)", cell_text):
                shown.update(name.strip() for name in group.split(",") if name.strip())
    for name in ("RandomBalancer.pick", "WeightedRandomBalancer.pick", "RoundRobinBalancer",
                 "LeastActiveBalancer.pick", "ConsistentHashBalancer", "PeakEwma.observe",
                 "P2CBalancer.pick", "Client._send"):
        assert name in shown, name
        owner, _, attribute = name.partition(".")
        target = getattr(v3_x, owner)
        assert callable(getattr(target, attribute) if attribute else target), name
    # The lines that carry the lesson appear only in outputs, never in a cell's source.
    for line in ("first, second = self.rng.sample(range(len(candidates)), 2)",
                 "scores[best.key] -= total",
                 "decay = math.exp(-max(now - self.stamp, 0.0) / self.tau)",
                 "chosen = self.balancer.pick(candidates, call.args)"):
        assert line not in text, line


def test_saved_outputs_name_no_machine_paths(cells: list[dict[str, Any]]) -> None:
    for cell in cells:
        for output in cell.get("outputs", []):
            text = json.dumps(output.get("text", "")) + json.dumps(
                output.get("data", {}).get("text/plain", ""))
            assert not re.search(r"/(tmp|work|home|root)/", text), source(cell)[:200]


# -- the helpers and reference answers, on more inputs ---------------------------------------


def test_the_ring_hash_is_the_balancers(cells: list[dict[str, Any]]) -> None:
    ring_hash = functions(cells, "ring_hash")["ring_hash"]
    rng = random.Random(5)
    for _ in range(500):
        text = "".join(rng.choice("0123456789:.#abc") for _ in range(rng.randint(0, 30)))
        assert ring_hash(text) == _hash(text)


def test_near_accepts_what_it_should_and_refuses_the_rest(cells: list[dict[str, Any]]) -> None:
    near = functions(cells, "near")["near"]
    assert near(0.5, 0.5, 100) and near(0.5 + 0.24, 0.5, 100) and not near(0.5 + 0.26, 0.5, 100)
    # A fair coin's share over 10,000 tosses: near 0.5 every time (five standard errors).
    rng = random.Random(11)
    assert all(near(sum(rng.random() < 0.5 for _ in range(10_000)) / 10_000, 0.5, 10_000)
               for _ in range(20))


def test_the_reference_plain_round_robin_gives_every_cycle_its_weights(
        cells: list[dict[str, Any]]) -> None:
    plain = functions(cells, "plain_weighted_round_robin")["plain_weighted_round_robin"]
    rng = random.Random(3)
    for _ in range(200):
        weights = {f"p{i}": rng.randint(1, 12) for i in range(rng.randint(1, 6))}
        cycle = sum(weights.values())
        picks = list(itertools.islice(plain(weights), 4 * cycle))
        for k in range(4):
            assert collections.Counter(picks[k * cycle:(k + 1) * cycle]) == weights, weights


def test_the_reference_least_active_chooses_as_the_balancer(cells: list[dict[str, Any]]) -> None:
    mine = functions(cells, "my_least_active")["my_least_active"]
    states, rng = random.Random(9), random.Random(10)
    reference = LeastActiveBalancer(random.Random(12))
    for _ in range(3000):
        candidates = [Candidate(f"p{i}", states.randint(1, 500), active=states.randint(0, 3))
                      for i in range(states.randint(1, 8))]
        fewest = min(c.active for c in candidates)
        chosen = mine(candidates, rng)
        assert chosen.active == fewest
        if sum(c.active == fewest for c in candidates) == 1:
            assert chosen is reference.pick(candidates)
