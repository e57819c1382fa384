"""The benchmark suite (``benchmarks/``): a tiny slice of it, run for real, and its pieces.

The slice is what a notebook would run: a few systems, the small workload, 1 and 16 in flight,
one repetition of a few calls. What is checked is the shape of the results (every cell of the
matrix listed, measured cells with calls and no errors), that ratios are taken to the peers of
the same run, and that the table names every system. The figures themselves are not: on a
shared machine they say nothing about correctness.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import build_parser, plan_from, write_json
from benchmarks.report import markdown, pair_ratio
from benchmarks.suite import Plan, run_suite
from benchmarks.systems import ECHO, GRPC_AIO, SYSTEMS, System, select
from benchmarks.workloads import WORKLOADS, calls_for, skip_reason

ROOT = Path(__file__).resolve().parents[1]
SMALL = next(w for w in WORKLOADS if w.name == "small")
ONE_MIB = next(w for w in WORKLOADS if w.name == "1MiB")


def run_slice(tmp_path: Path, systems: list[str], *, calls: int = 60) -> dict[str, Any]:
    """Run the suite on ``systems`` (small workload, 1 and 16 in flight, one repetition),
    write the document to ``tmp_path`` and read it back, as a notebook would."""
    plan = Plan(systems=tuple(select(systems)), workloads=(SMALL,), levels=(1, 16),
                repetitions=1, calls=calls)
    path = tmp_path / "results.json"
    write_json(path, run_suite(plan, log=lambda line: None))
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def cell(document: dict[str, Any], system: str, level: int,
         workload: str = "small") -> dict[str, Any]:
    (found,) = [c for c in document["cells"]
                if (c["system"], c["workload"], c["level"]) == (system, workload, level)]
    return found


def assert_measured_cleanly(document: dict[str, Any]) -> None:
    for c in document["cells"]:
        where = (c["system"], c["workload"], c["level"])
        assert c["status"] == "measured", (where, c.get("reason"), c.get("failures"))
        assert c["failures"] == [], where
        for run in c["runs"]:
            assert run["calls"] > 0 and run["errors"] == 0, (where, run)
            assert run["tps"] > 0 and run["p50_us"] > 0 and run["cpu_us"] > 0, (where, run)


@pytest.fixture(scope="module")
def slice_document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The echo, a blocking socket against it, v2.1 (async and blocking proxy) and grpc.aio."""
    return run_slice(tmp_path_factory.mktemp("bench"),
                     [ECHO, "echo-socket", "v2_1", "v2_1-blocking", GRPC_AIO])


def test_the_slice_has_the_machine_the_run_and_every_cell(slice_document: dict[str, Any]) -> None:
    doc = slice_document
    assert doc["format"] == "rpc-walkthrough/benchmark-suite" and doc["version"] == 1
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"] == (
        f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}")
    run = doc["run"]
    assert run["length"] in ("short", "full") and run["repetitions"] == 1
    assert run["workloads"] == ["small"] and run["levels"] == [1, 16]
    assert run["calls_override"] == 60 and run["elapsed_s"] > 0
    ids = [s["id"] for s in doc["systems"]]
    assert ids == [ECHO, "echo-socket", "v2_1", "v2_1-blocking", GRPC_AIO]
    assert all(s["available"] for s in doc["systems"])
    assert {(c["system"], c["level"]) for c in doc["cells"]} == {
        (i, level) for i in ids for level in (1, 16)}
    assert_measured_cleanly(doc)
    for c in doc["cells"]:
        (run,) = c["runs"]
        assert run["calls"] == 60 and c["median"]["tps"] == run["tps"]
        assert c["spread"]["tps"] == [run["tps"], run["tps"]]


def test_ratios_are_taken_to_the_peers_of_the_same_run(slice_document: dict[str, Any]) -> None:
    doc = slice_document
    for level in (1, 16):
        echo, grpc_aio, v2_1 = (cell(doc, s, level) for s in (ECHO, GRPC_AIO, "v2_1"))
        for key in ("tps_vs_echo", "cpu_vs_echo", "p50_vs_echo"):
            assert echo["ratios"][key] == {"median": 1.0, "min": 1.0, "max": 1.0}
        for key in ("tps_vs_grpc_aio", "cpu_vs_grpc_aio", "p50_vs_grpc_aio"):
            assert grpc_aio["ratios"][key] == {"median": 1.0, "min": 1.0, "max": 1.0}
        (run,), (echo_run,), (grpc_run,) = v2_1["runs"], echo["runs"], grpc_aio["runs"]
        ratios = v2_1["ratios"]
        assert math.isclose(ratios["tps_vs_echo"]["median"], run["tps"] / echo_run["tps"])
        assert math.isclose(ratios["cpu_vs_echo"]["median"], run["cpu_us"] / echo_run["cpu_us"])
        assert math.isclose(ratios["tps_vs_grpc_aio"]["median"], run["tps"] / grpc_run["tps"])
        assert math.isclose(ratios["p50_vs_echo"]["median"],
                            run["p50_us"] / echo_run["p50_us"])
    blocking = pair_ratio(doc, ("v2_1-blocking", "small", 1), ("echo-socket", "small", 1),
                          "p50_us")
    assert blocking is not None and blocking["median"] > 0


def test_the_table_names_every_system_measured(slice_document: dict[str, Any]) -> None:
    table = markdown(slice_document)
    for system in slice_document["systems"]:
        assert f"| {system['label']} | 1 |" in table
        assert f"| {system['label']} | 16 |" in table
    assert "### small" in table and "TPS ×grpc.aio" in table and "CPU ×echo" in table
    assert "v2.1 blocking proxy one at a time: p50 vs a blocking socket" in table


@pytest.mark.parametrize("peer", ["pyro5", "rpyc"])
def test_the_python_peers_run_with_threads(tmp_path: Path, peer: str) -> None:
    module = {"pyro5": "Pyro5", "rpyc": "rpyc"}[peer]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -r requirements-bench.lock)")
    doc = run_slice(tmp_path, [peer], calls=40)
    assert_measured_cleanly(doc)
    assert f"| {doc['systems'][0]['label']} | 16 |" in markdown(doc)
    # No reference in this run: the ratios say so rather than inventing one.
    assert cell(doc, peer, 16)["ratios"]["tps_vs_echo"] is None


def test_a_system_that_cannot_run_here_is_reported_and_the_rest_goes_on(
        tmp_path: Path) -> None:
    ghost = System("ghost", "a ghost RPC", "async", open=lambda target: None,
                   requires=("no_such_module_for_the_bench",))
    plan = Plan(systems=(ghost, *select([ECHO])), workloads=(SMALL,), levels=(1,),
                repetitions=1, calls=20)
    doc = run_suite(plan, log=lambda line: None)
    assert cell(doc, "ghost", 1)["status"] == "unavailable"
    assert "no_such_module_for_the_bench is not installed" in cell(doc, "ghost", 1)["reason"]
    assert cell(doc, ECHO, 1)["status"] == "measured"
    assert "| a ghost RPC | all | not run: no_such_module_for_the_bench" in markdown(doc)


def test_python_m_benchmarks_runs_a_filtered_slice(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "echo", "--workloads", "small",
         "--levels", "1,16", "--reps", "2", "--calls", "30", "--output", str(output), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| bare asyncio echo | 16 |" in done.stdout
    doc = json.loads(output.read_text())
    assert doc["run"]["repetitions"] == 2
    assert [len(c["runs"]) for c in doc["cells"]] == [2, 2]


# -- the pieces --------------------------------------------------------------------------------


def test_combinations_that_make_no_sense_are_skipped_with_a_reason() -> None:
    assert skip_reason(SMALL, 256, threads=False) is None
    assert "threads" in (skip_reason(SMALL, 256, threads=True) or "")
    assert skip_reason(ONE_MIB, 16, threads=False) is None
    assert "memory bandwidth" in (skip_reason(ONE_MIB, 64, threads=False) or "")
    plan = Plan(systems=tuple(SYSTEMS), workloads=WORKLOADS, levels=(1, 16, 64, 256),
                repetitions=3)
    assert [(w.name, level) for w, level in plan.cells(select(["pyro5"])[0])] == [
        ("small", 1), ("small", 16), ("small", 64), ("16KiB", 1), ("16KiB", 16), ("16KiB", 64),
        ("1MiB", 1), ("1MiB", 16)]


def test_each_repetition_starts_somewhere_else() -> None:
    systems = select(None)
    plan = Plan(systems=tuple(systems), workloads=(SMALL,), levels=(1,), repetitions=3)
    starts = [plan.order(systems, r)[0] for r in range(3)]
    assert len(set(starts)) == 3
    assert all(sorted(s.id for s in plan.order(systems, r)) == sorted(s.id for s in systems)
               for r in range(3))


def test_filters_select_systems_by_id_or_pattern_and_refuse_typos() -> None:
    assert [s.id for s in select(["v2_1", "echo"])] == ["echo", "v2_1"]
    assert {s.id for s in select(["v2_1*"])} == {"v2_1", "v2_1-uvloop", "v2_1-blocking"}
    assert all(s.loop == "uvloop" for s in select(["*-uvloop"]))
    with pytest.raises(ValueError, match="matches no system"):
        select(["v9_9"])
    args = build_parser().parse_args(["--only", "v2_1,echo", "--workloads", "small",
                                      "--levels", "1,64", "--reps", "2", "--calls", "10"])
    plan = plan_from(args)
    assert [s.id for s in plan.systems] == ["echo", "v2_1"]
    assert [w.name for w in plan.workloads] == ["small"] and plan.levels == (1, 64)
    assert plan.repetitions == 2 and calls_for(SMALL, 64, plan.calls) == 10
    for bad in (["--workloads", "huge"], ["--levels", "0"], ["--reps", "0"], ["--levels", "4"]):
        with pytest.raises(ValueError):
            plan_from(build_parser().parse_args(bad))


def test_the_suite_refuses_to_run_inside_an_event_loop_and_says_what_to_do() -> None:
    # It runs loops of its own (one per system): inside a running loop, as in a notebook's cell,
    # every async system would fail; it says so at once instead, before starting anything.
    import asyncio

    plan = Plan(systems=tuple(select(["echo"])), workloads=(WORKLOADS[0],), levels=(1,),
                repetitions=1, calls=5)

    async def inside() -> None:
        with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
            run_suite(plan, log=lambda line: None)

    asyncio.run(inside())
