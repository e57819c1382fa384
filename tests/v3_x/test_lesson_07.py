"""What notebook 07 (v3.3, config center, monitoring, who may call) promises beyond the house rules.

The rules shared by all notebooks are checked in ``tests/test_notebooks.py``; here, read from the
saved notebook: it is v3.3's lesson, its measurements are marked as varying, its exercises have a
cell to fill and a checking cell, it names only loopback, it runs against the real ZooKeeper and
Prometheus of the harness and stops them, and it shows the core code from the package instead of
pasting it. Its quantile helpers, taken out of the notebook, are run on more inputs than it gives
them, against Prometheus' own algorithm written out here.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import numpy as np
import pytest

import stages.v3_x as v3_x
from stages.v3_x.metrics import BUCKETS, CallCounts
from stages.v3_x.server import ProviderConnection
from tests.notebook_rules import IGNORE, Notebook, assert_exercises, assert_only_loopback

REFERENCE = "Reference answer"


@pytest.fixture(scope="module")
def notebook() -> Notebook:
    return Notebook("07_v3_3_config_center_monitoring.ipynb")


def functions(notebook: Notebook, *names: str) -> dict[str, Any]:
    return notebook.functions(*names, namespace={"math": math, "np": np})


# -- shape -----------------------------------------------------------------------------------


def test_the_lesson_is_v3_3s_and_its_measurements_are_marked_as_varying(
        notebook: Notebook) -> None:
    assert notebook.code and notebook.text.startswith("# v3.3: ")
    assert len(notebook.figures()) >= 4
    # Anything timed (a cell that lets the load run for a while), or whose size the run length
    # sets, varies from run to run.
    for text in notebook.code:
        if "run_length(" in text or re.search(r"^await asyncio\.sleep\(", text, re.M):
            assert text.startswith(IGNORE), text[:200]


def test_exercises_have_a_cell_to_fill_and_a_checking_cell(notebook: Notebook) -> None:
    assert_exercises(notebook, REFERENCE)


# -- what it runs against, and what must never be in it ----------------------------------------


def test_only_loopback_is_named(notebook: Notebook) -> None:
    assert_only_loopback(notebook)


def test_the_bench_is_real_and_the_last_cell_stops_it(notebook: Notebook) -> None:
    code = "\n".join(notebook.code)
    for started in ("resolve_zookeeper()", "LocalPrometheus(", 'ServerProcess("stages.v3_x"',
                    "ClientMetrics()", "metrics.serve(0)", "write_config(", 'token="auto"',
                    "mutual=True"):
        assert started in code, started
    last = notebook.code[-1]
    for stopped in ("aclose()", "metrics.close()", "process.stop", "prometheus.stop",
                    "resources.close()"):
        assert stopped in last, stopped


def test_the_core_code_is_shown_from_the_package_never_pasted(notebook: Notebook) -> None:
    shown = notebook.shown()
    owners = {"ApiSettings": v3_x.ApiSettings, "Client": v3_x.Client, "Server": v3_x.Server,
              "CallCounts": CallCounts,
              "ProviderConnection": ProviderConnection}
    for name in ("ApiSettings.parse", "Client._on_settings", "Client.invoke",
                 "CallCounts.on_call", "Server.respond", "CallCounts.on_served",
                 "ProviderConnection._on_request"):
        assert name in shown, (name, sorted(shown))
        owner, _, attribute = name.partition(".")
        assert callable(getattr(owners[owner], attribute)), name
    # Lines that carry the lesson appear only in outputs, never in a cell's source.
    code = "\n".join(notebook.code)
    for line in ('_check_idempotent(settings.over(api), f"methods.{name}")',
                 "self.server.unauthenticated += not self.authenticated"):
        assert line not in code, line


# -- the quantile helpers, on more inputs ------------------------------------------------------


def prometheus_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """``bucketQuantile`` of Prometheus 2.42 (promql/quantile.go), for cumulative counts."""
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start, count, rank = bounds[b - 1], count - counts[b - 1], rank - counts[b - 1]
    return start + (end - start) * (rank / count)


def random_histogram(rng: random.Random) -> tuple[list[float], list[float]]:
    """Cumulative counts over the metrics' own buckets, some of them empty."""
    per_bucket = [rng.choice((0, 0, rng.randint(1, 50))) for _ in range(len(BUCKETS) + 1)]
    per_bucket[rng.randrange(len(per_bucket))] += 1  # at least one call
    return [*BUCKETS, math.inf], list(np.cumsum(per_bucket).astype(float))


def test_the_reference_quantile_is_prometheus_and_the_bound_holds_it(notebook: Notebook) -> None:
    found = functions(notebook, "histogram_quantile", "bucket_bound")
    reference, bound = found["histogram_quantile"], found["bucket_bound"]
    rng = random.Random(7)
    for _ in range(2000):
        bounds, counts = random_histogram(rng)
        q = rng.choice((0.5, 0.9, 0.99, 0.999, rng.uniform(0.01, 1.0)))
        expected = prometheus_quantile(q, bounds, counts)
        assert math.isclose(reference(q, bounds, counts), expected, rel_tol=1e-9), (q, counts)
        # The plotted bound is the upper edge of the bucket the interpolated quantile lies in.
        upper = bound(q, np.array(bounds), np.array(counts))
        if upper == math.inf:
            assert expected == bounds[-2]
        else:
            i = bounds.index(upper)
            assert (bounds[i - 1] if i else 0.0) <= expected <= upper, (q, counts, upper)
    assert math.isnan(bound(0.5, np.array([1.0, math.inf]), np.array([0.0, 0.0])))
