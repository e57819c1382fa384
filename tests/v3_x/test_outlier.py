"""Outlier detection: the pure rules with a fake clock, then a frozen provider among three real
ones under load, with and without detection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from support import run, until
from zk_support import Load

from stages.harness.process import ServerProcess
from stages.v3_x import Client, ClientConfig, StaticRegistry
from stages.v3_x.errors import ConfigError
from stages.v3_x.outlier import Ejection, OutlierConfig, OutlierDetector

KEYS = ["a:1", "b:1", "c:1", "d:1"]


def detector(**settings: float) -> tuple[OutlierDetector, list[Ejection]]:
    events: list[Ejection] = []
    found = OutlierDetector(OutlierConfig(**settings))
    found.listeners.append(events.append)
    return found, events


def test_an_unanswered_call_ejects_at_once_for_the_base_time() -> None:
    outliers, events = detector(base_ejection=5, max_ejection=60)
    assert outliers.failed("a:1", 100.0, "RpcTimeoutError", KEYS) is not None
    assert events == [Ejection("a:1", 105.0, 1, "RpcTimeoutError")]
    assert outliers.ejected("a:1", 100.0) and outliers.ejected("a:1", 104.999)
    assert not outliers.ejected("a:1", 105.0)
    assert not outliers.ejected("b:1", 100.0)


def test_the_calls_of_one_incident_make_one_ejection() -> None:
    outliers, events = detector(base_ejection=5)
    for t in (100.0, 100.1, 104.9):  # calls pending on one dead connection fail together
        outliers.failed("a:1", t, "ConnectionClosedError", KEYS)
    assert len(events) == 1 and events[0].until == 105.0


def test_each_ejection_in_a_row_doubles_up_to_the_cap_and_an_answer_forgives() -> None:
    outliers, events = detector(base_ejection=5, max_ejection=30)
    now = 0.0
    for _ in range(5):
        event = outliers.failed("a:1", now, "RpcTimeoutError", KEYS)
        assert event is not None
        now = event.until  # back in rotation, and unanswered again
    assert [e.until - before for e, before in zip(events, [0, 5, 15, 35, 65])] == [5, 10, 20, 30, 30]
    outliers.answered("a:1", now - 1)  # an answer during the ejection (a call sent before it)
    assert outliers.failed("a:1", now, "RpcTimeoutError", KEYS).times == 6  # not forgiven
    outliers.answered("a:1", now + 31)  # an answer once it is back: forgiven
    assert outliers.failed("a:1", now + 32, "RpcTimeoutError", KEYS).times == 1


def test_at_most_the_allowed_share_is_ejected_but_always_one() -> None:
    outliers, _ = detector(max_ejected_fraction=0.5)
    assert outliers.failed("a:1", 0, "x", KEYS) and outliers.failed("b:1", 0, "x", KEYS)
    assert outliers.failed("c:1", 0, "x", KEYS) is None  # 2 of 4 are out already
    assert outliers.ejected_keys(0) == {"a:1", "b:1"}
    lone, _ = detector(max_ejected_fraction=0.0)
    assert lone.failed("a:1", 0, "x", ["a:1"]) is not None  # one may always be ejected
    assert lone.failed("b:1", 0, "x", ["a:1", "b:1"]) is None


def test_a_provider_that_left_is_forgotten() -> None:
    outliers, _ = detector()
    outliers.failed("a:1", 0, "x", KEYS)
    outliers.forget("a:1")
    assert not outliers.ejected("a:1", 0)


@pytest.mark.parametrize("settings", [
    {"base_ejection": 0}, {"base_ejection": float("nan")}, {"max_ejection": float("inf")},
    {"base_ejection": 10, "max_ejection": 5}, {"max_ejected_fraction": 1.5},
    {"max_ejected_fraction": True},
])
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        OutlierConfig(**settings)


# -- a frozen provider among three, under load --------------------------------------------------


@contextmanager
def providers(count: int) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        yield [stack.enter_context(ServerProcess("stages.v2_1", ["--min-ping-interval", "0.05"]))
               for _ in range(count)]


# Round robin sends every third call to the frozen provider until something stops it; a call's
# deadline (0.5 s) is far shorter than the heartbeat's verdict (3 s), as with the defaults.
SETTINGS = dict(balancer="round_robin", timeout=0.5, heartbeat_interval=1.0, breaker=None)


@pytest.mark.parametrize("detect", [True, False], ids=["detection", "no detection"])
def test_a_frozen_provider_stops_receiving_calls_after_its_first_unanswered_one(
        detect: bool) -> None:
    config = ClientConfig(**SETTINGS, outlier=OutlierConfig(base_ejection=30) if detect else None)

    measured: list[int] = []

    async def scenario() -> None:
        with providers(3) as procs:
            client = Client(StaticRegistry(f"{p.host}:{p.port}" for p in procs), config)
            load = Load(client)
            await until(lambda: load.ok > 300, 10, "calls under way")
            frozen = f"{procs[0].host}:{procs[0].port}"
            [view] = client.views.values()
            procs[0].pause()
            frozen_at = time.monotonic()
            await until(lambda: sum(load.failed.values()) > 0, 5, "a call to the frozen provider "
                        "timed out")
            first_failure = time.monotonic() - frozen_at
            assert first_failure < 2 * config.timeout + 0.5  # one deadline, and scheduling
            await asyncio.sleep(0.2)  # the calls already sent to it time out too
            sent_before = view.candidates[frozen].calls + view.candidates[frozen].active
            failed_before, ok_before = sum(load.failed.values()), load.ok
            await until(lambda: load.ok > ok_before + 300, 20, "calls after the freeze")
            sent_after = view.candidates[frozen].calls + view.candidates[frozen].active
            failed_after = sum(load.failed.values())
            await load.stop()
            procs[0].resume()
            stats = dict(client.stats)
            await client.aclose()
            if detect:
                assert stats["ejections"] == 1, stats
            else:
                assert "ejections" not in stats
            measured.extend([sent_after - sent_before, failed_after - failed_before])

    run(scenario, 60)
    sent, failed = measured
    if detect:  # set aside at its first unanswered call: no call since, none failed
        assert (sent, failed) == (0, 0)
    else:  # every third call still goes to it, and fails after its deadline
        assert sent > 0 and failed > 0, (sent, failed)
