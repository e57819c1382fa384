"""The heartbeat state machine with a fake clock, and the heartbeat settings."""

from __future__ import annotations

import pytest

from stages.v2_1 import Action, ClientConfig, ConfigError, Heartbeat, ServerConfig, detection_budget


def test_pings_after_an_interval_of_silence_then_closes_at_the_idle_timeout() -> None:
    hb = Heartbeat(1.0, 3.0, now=0.0)
    assert hb.poll(0.5) == (Action.NOTHING, 1.0)
    assert hb.poll(1.0) == (Action.PING, 2.0)
    assert hb.poll(1.5) == (Action.NOTHING, 2.0)  # one ping per interval, not one per poll
    assert hb.poll(2.0) == (Action.PING, 3.0)
    assert hb.poll(3.0)[0] is Action.CLOSE


def test_anything_read_resets_the_clock() -> None:
    hb = Heartbeat(1.0, 3.0, now=0.0)
    assert hb.poll(1.0)[0] is Action.PING
    hb.on_read(1.2)  # the pong (or any answer)
    assert hb.poll(2.0) == (Action.NOTHING, 2.2)
    assert hb.poll(2.2)[0] is Action.PING
    assert hb.poll(4.1)[0] is not Action.CLOSE
    assert hb.poll(4.2)[0] is Action.CLOSE


def test_a_busy_connection_never_pings() -> None:
    hb = Heartbeat(1.0, 3.0, now=0.0)
    for tick in range(1, 100):
        hb.on_read(tick * 0.5)
        assert hb.poll(tick * 0.5 + 0.25)[0] is Action.NOTHING


def test_a_side_without_interval_only_closes() -> None:
    hb = Heartbeat(None, 2.0, now=10.0)
    assert hb.poll(11.9) == (Action.NOTHING, 12.0)
    assert hb.poll(12.0)[0] is Action.CLOSE


def test_idle_timeout_defaults_to_three_intervals_and_under_two_is_refused() -> None:
    assert ClientConfig(heartbeat_interval=2.0).idle_timeout == 6.0
    assert ClientConfig(heartbeat_interval=2.0, idle_timeout=4.0).idle_timeout == 4.0
    with pytest.raises(ConfigError, match="at least twice the heartbeat_interval"):
        ClientConfig(heartbeat_interval=2.0, idle_timeout=3.9)


@pytest.mark.parametrize("kwargs", [{"heartbeat_interval": 0}, {"backoff_jitter": 1.0},
                                    {"backoff_multiplier": 0.5}, {"connect_timeout": -1},
                                    {"idle_timeout": "3"}])
def test_bad_client_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"min_ping_interval": 0}, {"max_ping_strikes": -1},
                                    {"max_concurrent_calls": 0}, {"shutdown_grace": 0},
                                    {"max_ping_strikes": True}])
def test_bad_server_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_default_server_idle_timeout_leaves_room_for_default_client_pings() -> None:
    assert ServerConfig().idle_timeout >= 2 * ClientConfig().heartbeat_interval
    assert ServerConfig().min_ping_interval <= ClientConfig().heartbeat_interval


def test_detection_budget() -> None:
    budget = detection_budget(interval=5.0, idle_timeout=15.0)
    assert budget.worst_case_detection == 15.0
    assert budget.pings_per_minute_idle == 12.0
    assert budget.bytes_per_minute_idle == 12 * 2 * 16
