"""The v2.1 client's reconnection backoff, attempt by attempt.

Each test makes connection attempts against a port that is bound but not listening (the kernel
refuses at once, and nobody else can take the port meanwhile), and reads the delay the client
chose after each failure: ``Endpoint._next_attempt`` is set to "the time of the failure + the delay", so
the delay is known to within the attempt's own duration. The jitter's randomness comes from an
injected ``random`` with known draws.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import pytest
from support import run, until

from stages.v2_0.user_stub import UserApi
from stages.v2_1 import Client, ClientConfig, TransportError
from stages.v2_1 import client as client_module

EPS = 1e-9


@pytest.fixture
def refusing_port() -> Iterator[socket.socket]:
    """A socket bound to a loopback port without listening: connections to it are refused
    until the test calls ``listen()`` on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


class Draws:
    """Stands in for the ``random`` module: ``random()`` returns the given draws in turn."""

    def __init__(self, *draws: float) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)


class Delay:
    """The delay chosen after a failed attempt, known to lie in ``[low, high]``."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __eq__(self, expected: object) -> bool:
        return isinstance(expected, float) and self.low - EPS <= expected <= self.high + EPS

    def __repr__(self) -> str:
        return f"Delay({self.low:.6f}..{self.high:.6f})"


def refused(client: Client) -> str:
    """The message of a refused connection attempt: where, and the OS's reason."""
    host, port = client.address
    return rf"cannot connect to {host}:{port}: \[Errno \d+\] Connect call failed"


async def failed_attempt(client: Client) -> Delay:
    """Make one connection attempt that fails; return the delay chosen before the next one."""
    loop = asyncio.get_running_loop()
    before = loop.time()
    with pytest.raises(TransportError, match=refused(client)):
        await client.endpoint._open()
    after = loop.time()
    # _next_attempt = (time of the failure, between before and after) + delay
    return Delay(client.endpoint._next_attempt - after, client.endpoint._next_attempt - before)


def delays_of(client: Client, attempts: int) -> list[Delay]:
    delays: list[Delay] = []

    async def scenario() -> None:
        for _ in range(attempts):
            delays.append(await failed_attempt(client))
        await client.aclose()

    run(scenario)
    return delays


def test_the_delay_grows_by_the_multiplier_up_to_the_maximum(refusing_port: socket.socket) -> None:
    config = ClientConfig(backoff_initial=0.01, backoff_multiplier=3.0, backoff_max=1.0,
                          backoff_jitter=0.0)
    client = Client(*refusing_port.getsockname(), config)
    expected = [0.01, 0.03, 0.09, 0.27, 0.81, 1.0, 1.0]
    assert delays_of(client, len(expected)) == expected
    assert client.endpoint._delay == 1.0


def test_each_delay_is_the_grown_delay_times_its_jitter(refusing_port: socket.socket,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # random() in [0, 1) maps to a factor in [1 - jitter, 1 + jitter).
    monkeypatch.setattr(client_module, "random", Draws(0.0, 0.5, 0.999, 0.25, 0.75))
    config = ClientConfig(backoff_initial=0.02, backoff_multiplier=2.0, backoff_max=0.1,
                          backoff_jitter=0.5)
    client = Client(*refusing_port.getsockname(), config)
    grown = [0.02, 0.04, 0.08, 0.1, 0.1]
    factors = [0.5, 1.0, 1.499, 0.75, 1.25]
    expected = [d * f for d, f in zip(grown, factors)]
    assert delays_of(client, 5) == expected


def test_the_jitter_stays_within_its_bounds_and_varies(refusing_port: socket.socket,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "random", random.Random(20240229))
    config = ClientConfig(backoff_initial=0.5, backoff_multiplier=1.0, backoff_jitter=0.2)
    client = Client(*refusing_port.getsockname(), config)
    factors = [(d.low + d.high) / 2 / 0.5 for d in delays_of(client, 20)]
    assert all(0.8 - EPS <= f <= 1.2 + EPS for f in factors), factors
    assert max(factors) - min(factors) > 0.2, factors  # spread over the range, not one value
    assert len({round(f, 4) for f in factors}) == 20, factors


def test_a_successful_connect_resets_the_delay(refusing_port: socket.socket) -> None:
    config = ClientConfig(backoff_initial=0.01, backoff_multiplier=2.0, backoff_max=5.0,
                          backoff_jitter=0.0)
    client = Client(*refusing_port.getsockname(), config)

    async def scenario() -> None:
        assert [await failed_attempt(client) for _ in range(4)] == [0.01, 0.02, 0.04, 0.08]
        assert client.endpoint._delay == pytest.approx(0.16)
        refusing_port.listen()
        conn = await client.endpoint._open()
        assert client.connection is conn and client.connects == 1
        assert client.endpoint._delay == 0.01 and client.endpoint._next_attempt == 0.0
        # The server goes away again: backing off starts over from the initial delay.
        refusing_port.close()
        conn.close()
        await conn.closed
        assert await failed_attempt(client) == 0.01
        assert await failed_attempt(client) == 0.02
        await client.aclose()

    run(scenario)


def test_calls_fail_fast_while_backing_off_and_try_again_after(refusing_port: socket.socket) -> None:
    config = ClientConfig(backoff_initial=0.5, backoff_jitter=0.0)
    client = Client(*refusing_port.getsockname(), config)

    async def scenario() -> None:
        users = client.async_proxy(UserApi)
        loop = asyncio.get_running_loop()
        with pytest.raises(TransportError, match=refused(client)):
            await users.get_user(1)
        failed_at = loop.time()
        # No attempt is made: the call fails at once, naming the last error and the wait.
        with pytest.raises(TransportError, match=r"unavailable \(last error: \[Errno \d+\] "
                           r"Connect call failed .*\); next connection attempt in 0\.\d+ s"):
            await users.get_user(1)
        assert loop.time() - failed_at < 0.4
        await until(lambda: loop.time() >= client.endpoint._next_attempt, what="the backoff delay ends")
        with pytest.raises(TransportError, match=refused(client)):
            await users.get_user(1)  # the delay is over: a real attempt again
        assert client.endpoint._delay == pytest.approx(2.0)  # two failed attempts: 0.5 * 2 * 2
        await client.aclose()

    run(scenario)
