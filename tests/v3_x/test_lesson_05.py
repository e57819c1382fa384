"""What notebook 05 (v3.1, load balancing) promises beyond the house rules, and its helpers.

The rules every notebook keeps are checked in ``tests/test_notebooks.py``; here, read from the
saved notebook: its measurements are marked as varying, its exercises have a cell to fill and a
checking cell, its randomness is seeded, it names only loopback, and it shows the core code from
the package; and the helpers and reference answers it defines, taken out of the notebook and run
on more inputs than the notebook gives them.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import math
import random
import re
from typing import Any

import pytest

import stages.v3_x as v3_x
from stages.v3_x.balancer import Candidate, LeastActiveBalancer, _hash
from tests.notebook_rules import IGNORE, Notebook, assert_exercises, assert_only_loopback

REFERENCE = "Reference answer: replace this with your own."
NAMESPACE = {"math": math, "random": random, "collections": collections, "itertools": itertools,
             "hashlib": hashlib, "bisect": bisect, "Candidate": Candidate}


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook("05_v3_1_load_balancing.ipynb")


def functions(notebook: Notebook, *names: str) -> dict[str, Any]:
    return notebook.functions(*names, namespace=NAMESPACE)


# -- shape -----------------------------------------------------------------------------------


def test_the_lesson_is_v3_1s_and_its_measurements_are_marked_as_varying(
        notebook: Notebook) -> None:
    assert notebook.text.startswith("# v3.1: ") and len(notebook.figures()) >= 4
    # Measurements, timings, and anything whose size the run length sets.
    varying = ("measure_closed_loop(", "timeit.", "await run_strategy(", "run_length(")
    for text in notebook.code:
        if any(marker in text for marker in varying):
            assert text.startswith(IGNORE), text[:200]


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(notebook: Notebook) -> None:
    assert_exercises(notebook, REFERENCE)


# -- what must never be in it ------------------------------------------------------------------


def test_randomness_is_seeded_and_only_loopback_is_named(notebook: Notebook) -> None:
    text = "\n".join(notebook.code)
    assert "random.Random(" in text
    assert not re.search(r"random\.Random\(\s*\)", text), "an unseeded random.Random()"
    assert not re.search(r"\brandom\.(random|choice|choices|randrange|randint|sample|shuffle)\(",
                         text), "the module-level random source is not seeded"
    assert_only_loopback(notebook)


def test_the_core_code_is_shown_from_the_package_never_pasted(notebook: Notebook) -> None:
    shown = notebook.shown()
    for name in ("RandomBalancer.pick", "WeightedRandomBalancer.pick", "RoundRobinBalancer",
                 "LeastActiveBalancer.pick", "ConsistentHashBalancer", "PeakEwma.observe",
                 "P2CBalancer.pick", "Client._send"):
        assert name in shown, name
        owner, _, attribute = name.partition(".")
        target = getattr(v3_x, owner)
        assert callable(getattr(target, attribute) if attribute else target), name
    # The lines that carry the lesson appear only in outputs, never in a cell's source.
    code = "\n".join(notebook.code)
    for line in ("first, second = self.rng.sample(range(len(candidates)), 2)",
                 "scores[best.key] -= total",
                 "decay = math.exp(-max(now - self.stamp, 0.0) / self.tau)",
                 "chosen = self.balancer.pick(candidates, call.args)"):
        assert line not in code, line


# -- the helpers and reference answers, on more inputs ---------------------------------------


def test_the_ring_hash_is_the_balancers(notebook: Notebook) -> None:
    ring_hash = functions(notebook, "ring_hash")["ring_hash"]
    rng = random.Random(5)
    for _ in range(500):
        text = "".join(rng.choice("0123456789:.#abc") for _ in range(rng.randint(0, 30)))
        assert ring_hash(text) == _hash(text)


def test_near_accepts_what_it_should_and_refuses_the_rest(notebook: Notebook) -> None:
    near = functions(notebook, "near")["near"]
    assert near(0.5, 0.5, 100) and near(0.5 + 0.24, 0.5, 100) and not near(0.5 + 0.26, 0.5, 100)
    # A fair coin's share over 10,000 tosses: near 0.5 every time (five standard errors).
    rng = random.Random(11)
    assert all(near(sum(rng.random() < 0.5 for _ in range(10_000)) / 10_000, 0.5, 10_000)
               for _ in range(20))


def test_the_reference_plain_round_robin_gives_every_cycle_its_weights(
        notebook: Notebook) -> None:
    plain = functions(notebook, "plain_weighted_round_robin")["plain_weighted_round_robin"]
    rng = random.Random(3)
    for _ in range(200):
        weights = {f"p{i}": rng.randint(1, 12) for i in range(rng.randint(1, 6))}
        cycle = sum(weights.values())
        picks = list(itertools.islice(plain(weights), 4 * cycle))
        for k in range(4):
            assert collections.Counter(picks[k * cycle:(k + 1) * cycle]) == weights, weights


def test_the_reference_least_active_chooses_as_the_balancer(notebook: Notebook) -> None:
    mine = functions(notebook, "my_least_active")["my_least_active"]
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
