"""``benchmarks.breakdown``: which layer owns which code, how own time is added up, and a real
profile of in-process v3.x calls.

The grouping is checked on a made-up profile whose sums are known (built-ins charged to their
callers in proportion, waiting set apart, nothing lost); the layer table against every module of
the stages (each belongs to the layer of its package, none is left to "other"); and one short
profile of real calls for its shape, never its figures.
"""

from __future__ import annotations

import asyncio
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import stages
from benchmarks.breakdown import (
    LAYERS,
    OTHER,
    WAITING,
    Key,
    Stats,
    breakdown_of,
    layer_of,
    own_time_by_layer,
    where_time_goes,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = [layer for layer, _ in LAYERS] + [OTHER]


def test_each_file_belongs_to_the_most_specific_layer() -> None:
    cases = {
        "/repo/stages/v1_0/protocol.py": "frames (v1.0)",
        "/repo/stages/v1_0/client.py": "proxy and dispatch (v1.0, v2.0)",
        "/repo/stages/v2_0/pickle_scan.py": "serialization (v2.0, v2.1 hot path)",
        "/repo/stages/v2_1/fastpath.py": "serialization (v2.0, v2.1 hot path)",
        "/usr/lib/python3.11/pickle.py": "serialization (v2.0, v2.1 hot path)",
        "/repo/stages/v2_0/client.py": "proxy and dispatch (v1.0, v2.0)",
        "/repo/stages/v2_1/writer.py": "connection (v2.1)",
        "/repo/stages/v3_x/outlier.py": "balancer (v3.1)",
        "/repo/stages/v3_x/breaker.py": "breaker (v3.2)",
        "/repo/stages/v3_x/deadline.py": "policy and deadline (v3.2)",
        "/venv/lib/python3.11/site-packages/prometheus_client/values.py": "metrics (v3.3)",
        "/repo/stages/v3_x/client.py": "v3.x client and server",
        "/usr/lib/python3.11/asyncio/base_events.py": "asyncio",
        "C:\\Python311\\Lib\\asyncio\\events.py": "asyncio",
        "/usr/lib/python3.11/selectors.py": "asyncio",
        "/repo/stages/harness/bench.py": OTHER,
        "<string>": OTHER,
        # A file whose name only ends like a pattern is not that file.
        "/repo/my_pickle.py": OTHER,
        "/repo/stages/v2_0/limits_extra/x.py": "proxy and dispatch (v1.0, v2.0)",
    }
    for filename, layer in cases.items():
        assert layer_of(filename) == layer, (filename, layer_of(filename))


def test_every_module_of_the_stages_has_the_layer_of_its_package() -> None:
    # Whatever modules a stage gains, none falls to "other": the table follows the packages.
    package_layers = {"v1_0": {"frames (v1.0)", "proxy and dispatch (v1.0, v2.0)"},
                      "v2_0": {"serialization (v2.0, v2.1 hot path)",
                               "proxy and dispatch (v1.0, v2.0)"},
                      "v2_1": {"serialization (v2.0, v2.1 hot path)", "connection (v2.1)"},
                      "v3_x": {name for name in NAMES if "v3." in name}}
    seen = set()
    for module in pkgutil.walk_packages(stages.__path__, "stages."):
        parts = module.name.split(".")
        if parts[1] not in package_layers or module.ispkg:
            continue
        filename = str(Path(*parts).with_suffix(".py"))
        layer = layer_of(str(ROOT / filename))
        assert layer in package_layers[parts[1]], (module.name, layer)
        seen.add(layer)
    assert seen >= set(NAMES) - {"asyncio", OTHER}


def key(filename: str, name: str) -> Key:
    return (filename, 1, name)


def test_builtins_are_charged_to_their_callers_and_waiting_is_set_apart() -> None:
    serializer = key("/r/stages/v2_0/serializers.py", "decode")
    transport = key("/usr/lib/python3.11/asyncio/selector_events.py", "write")
    loads = key("~", "<built-in method _pickle.loads>")
    length = key("~", "<built-in method builtins.len>")
    getter = key("~", "<method 'get' of 'dict' objects>")
    poll = key("~", "<method 'poll' of 'select.epoll' objects>")
    orphan = key("~", "<built-in method builtins.exec>")
    stats: Stats = {
        serializer: (10, 10, 2.0, 5.0, {}),
        transport: (10, 10, 1.0, 1.5, {}),
        # loads: 3 s, all from the serializer; len: 1 s, a quarter from the transport.
        loads: (10, 10, 3.0, 3.0, {serializer: (10, 10, 3.0, 3.0)}),
        length: (40, 40, 1.0, 1.0, {serializer: (30, 30, 0.75, 0.75),
                                    transport: (10, 10, 0.25, 0.25)}),
        # A built-in called only by a built-in passes its time on to that one's callers.
        getter: (5, 5, 0.5, 0.5, {length: (5, 5, 0.5, 0.5)}),
        poll: (3, 3, 4.0, 4.0, {transport: (3, 3, 4.0, 4.0)}),
        orphan: (1, 1, 0.25, 0.25, {}),
    }
    seconds = own_time_by_layer(stats)
    assert seconds == pytest.approx({
        "serialization (v2.0, v2.1 hot path)": 2.0 + 3.0 + 0.75 + 0.375,
        "asyncio": 1.0 + 0.25 + 0.125,
        WAITING: 4.0,
        OTHER: 0.25,
    })
    assert math.isclose(sum(seconds.values()), sum(entry[2] for entry in stats.values()))

    result = breakdown_of(stats, calls=10, in_flight=2, plain_seconds=1e-3,
                          profiled_seconds=4e-3)
    assert [share.layer for share in result.layers] == NAMES
    assert math.isclose(sum(share.share for share in result.layers), 1.0)
    assert result.waiting_us_per_call == pytest.approx(4.0 / 10 * 1e6)
    assert result.share("asyncio") == pytest.approx(1.375 / 7.75)
    assert result.share("breaker (v3.2)") == 0.0
    assert result.plain_us_per_call == pytest.approx(100.0) and result.slowdown == 4.0
    with pytest.raises(KeyError):
        result.share("no such layer")
    with pytest.raises(ValueError):
        breakdown_of(stats, calls=0, in_flight=1, plain_seconds=1.0, profiled_seconds=1.0)
    with pytest.raises(ValueError):
        breakdown_of({poll: stats[poll]}, calls=1, in_flight=1, plain_seconds=1.0,
                     profiled_seconds=1.0)


def test_a_real_profile_of_v3_calls_has_every_layer_of_a_call() -> None:
    result = asyncio.run(where_time_goes(640, in_flight=16))
    assert (result.calls, result.in_flight) == (640, 16)
    assert math.isclose(sum(share.share for share in result.layers), 1.0)
    assert 0 < result.plain_us_per_call < result.profiled_us_per_call
    # Every call goes through the frames, the serializers, the connection and the loop, and
    # through v3.x's governance (how that is spread over v3.x's modules may change).
    for layer in ("frames (v1.0)", "serialization (v2.0, v2.1 hot path)", "connection (v2.1)",
                  "asyncio"):
        assert result.share(layer) > 0, layer
    assert sum(share.share for share in result.layers if "v3." in share.layer) > 0


def test_the_module_passes_strict_mypy() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "benchmarks/breakdown.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
