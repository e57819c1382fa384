"""Notebook 04 (v3.0, the ZooKeeper registry): its shape, and its measurement helpers.

The notebook runs under nbval as a test of its own; these tests check what nbval does not: that
the saved notebook keeps the house rules (numbered figures that assert on their data, live output
marked as such, exercises with checks, no sleeping and hoping), and that the helpers its
measurements rest on are right, run on their own against a real ZooKeeper.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from stages.harness.zookeeper import four_letter_word
from stages.v3_x import NoProviderError

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_v3_0_zookeeper_registry.ipynb"
HELPERS_MARK = "# Helpers of this notebook's experiments"
IGNORE = "# NBVAL_IGNORE_OUTPUT"


def cells() -> list[dict[str, Any]]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def code_cells() -> list[str]:
    return [source(cell) for cell in cells() if cell["cell_type"] == "code"]


@pytest.fixture(scope="module")
def helpers() -> Iterator[types.ModuleType]:
    """The notebook's helper cell, run as a module of its own."""
    (text,) = [s for s in code_cells() if s.startswith(HELPERS_MARK)]
    module = types.ModuleType("lesson_04_helpers")
    sys.modules[module.__name__] = module
    try:
        exec(compile(text, f"{NOTEBOOK.name}:helpers", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


# -- the notebook's shape ----------------------------------------------------------------------


def test_live_output_is_marked_and_only_the_helpers_sleep() -> None:
    for text in code_cells():
        if "inspect.getsource(" in text or "print_tree(" in text:
            assert text.startswith(IGNORE), text[:80]
        if not text.startswith(HELPERS_MARK):
            # Waiting is wait_for's job, with a deadline; pacing is Load's.
            assert "asyncio.sleep(" not in text, text[:80]


def test_zookeeper_is_found_through_the_harness_and_stopped_by_its_handle() -> None:
    text = "\n".join(code_cells())
    assert "resolve_zookeeper()" in text
    # The one server the notebook stops and starts itself is its own, stopped by its handle.
    assert text.count("LocalZooKeeper(") == 1 and "restart_zk.stop()" in text
    assert "stack.close()" in text


def test_every_exercise_has_a_reference_answer_and_a_check() -> None:
    all_cells = cells()
    exercises = [i for i, cell in enumerate(all_cells) if cell["cell_type"] == "code"
                 and re.match(r"# Exercise \d: replace this with your own", source(cell))]
    assert 2 <= len(exercises) <= 3
    for number, i in enumerate(exercises, start=1):
        text = source(all_cells[i])
        assert text.startswith(f"# Exercise {number}:")
        assert "# Check" in text and re.search(r"^\s*assert ", text, re.M)
        assert re.search(rf"\*\*Exercise {number}\b", source(all_cells[i - 1]))


# -- the helpers -------------------------------------------------------------------------------


def test_view_history_sizes_and_first(helpers: types.ModuleType) -> None:
    now = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    history = helpers.ViewHistory(clock=lambda: next(now))
    for providers in ({}, {"a": 1}, {"a": 1}, {"b": 1}, {"a": 1, "b": 1}):
        history(providers)
    # A repeated list is not a change; a different list of the same size is.
    assert history.sizes() == [0, 1, 1, 2]
    assert history.first(lambda keys: "b" in keys) == 4.0
    assert history.first(lambda keys: "a" in keys, after=3.5) == 5.0
    assert history.first(lambda keys: "c" in keys) is None


def test_zookeeper_arithmetic(helpers: types.ModuleType) -> None:
    assert helpers.effective_session(0.1, 0.4, 4.0) == 0.4
    assert helpers.effective_session(10.0, 0.4, 4.0) == 4.0
    assert helpers.effective_session(1.5, 0.4, 4.0) == 1.5
    # kazoo's longest silence is a third of the session, or 0.4 s for short sessions.
    assert helpers.expiry_window(0.5, 0.2) == pytest.approx((0.1, 0.7))
    assert helpers.expiry_window(3.0, 0.2) == pytest.approx((2.0, 3.2))
    assert helpers.parse_four_letter("zk_watch_count\t7\nzk_version\t3.8.0, built\n") == \
        {"zk_watch_count": "7", "zk_version": "3.8.0, built"}
    assert helpers.parse_four_letter("tickTime=200\nclientPort=2181\n\n") == \
        {"tickTime": "200", "clientPort": "2181"}


def test_wait_for_returns_when_true_and_fails_at_its_deadline(helpers: types.ModuleType) -> None:
    async def scenario() -> None:
        ready: list[bool] = []
        asyncio.get_running_loop().call_later(0.05, ready.append, True)
        assert 0.04 < await helpers.wait_for(lambda: bool(ready), 1, "soon") < 0.5
        with pytest.raises(AssertionError, match="not within 0.05 s: never"):
            await helpers.wait_for(lambda: False, 0.05, "never")

    asyncio.run(scenario())


def test_load_counts_successes_and_keeps_failures_with_their_time(
        helpers: types.ModuleType) -> None:
    async def scenario() -> None:
        calls = collections.Counter[str]()

        async def call() -> None:
            calls["all"] += 1
            if calls["all"] % 3 == 0:
                raise NoProviderError("none")

        load = helpers.Load(call, workers=2, pause=0.001, clock=lambda: 7.0)
        await helpers.wait_for(lambda: calls["all"] >= 30, 5, "thirty calls")
        await load.stop()
        assert load.ok + len(load.failures) == calls["all"]
        assert len(load.failures) == calls["all"] // 3
        assert load.failed() == {"NoProviderError": len(load.failures)}
        assert load.failed(start=7.5) == {} and load.failed(end=7.0) == {}

    asyncio.run(scenario())


def test_measure_fanout_counts_what_each_change_costs(helpers: types.ModuleType,
                                                      zk_chroot: str) -> None:
    server = zk_chroot.split("/", 1)[0].split(",")[0]
    host, _, port = server.rpartition(":")

    def counters() -> dict[str, float]:
        answer = helpers.parse_four_letter(four_letter_word(host, int(port), "mntr"))
        return {name: float(answer[name]) for name in
                ("zk_watch_count", "zk_sum_node_children_watch_count") if name in answer}

    with pytest.raises(ValueError):
        helpers.measure_fanout(zk_chroot, 1, 1, 0)
    run = helpers.measure_fanout(zk_chroot, consumers=3, changes=4, list_size=2,
                                 counters=counters)
    assert run.consumers == 3 and run.list_sizes == [3, 2, 3, 2]
    # Every consumer read every entry of the new list, once per change.
    assert run.entry_reads == [9, 6, 9, 6]
    assert all(0 < first <= last < 10 for first, last in zip(run.first, run.last))
    if run.server:  # the harness's ZooKeeper answers mntr; another one may not
        assert run.server["zk_sum_node_children_watch_count"] == 3 * 4
        assert run.held["zk_watch_count"] - run.idle["zk_watch_count"] == 3
    # It cleans up after itself: no session of its own is left, and its entries went with it.
    client = KazooClient(hosts=zk_chroot)
    client.start(10)
    try:
        assert client.get_children("/fanout/providers") == []
    finally:
        client.stop()
        client.close()
