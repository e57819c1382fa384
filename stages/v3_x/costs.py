"""What v3.3's guards cost: TLS, the token, and metrics on both sides, measured in one run.

``python -m stages.v3_x bench --costs``: a provider process and this process as its consumer,
64 calls in flight, for each setting in turn (plain; metrics; token; TLS; all three), repeated
``rounds`` times in interleaved order, so that a slow moment of a shared machine falls on every
setting alike. Reported per setting: the median calls per second, and the median CPU time per
call of the consumer and of the provider, which is the steadier figure (wall-clock throughput on a
shared 2-core machine swings by a third between runs).

The token is checked once per connection and TLS is a handshake per connection plus encryption
of every byte; metrics are a few counter and histogram updates per call on each side.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from stages.harness.bench import default_warmup, measure_closed_loop
from stages.harness.certs import Certificates, make_certificates
from stages.harness.process import ServerProcess, cpu_seconds
from stages.v2_0.user_stub import UserApi
from stages.v3_x.client import Client
from stages.v3_x.config import ClientConfig
from stages.v3_x.metrics import ClientMetrics
from stages.v3_x.registry import ProviderInfo, StaticRegistry
from stages.v3_x.security import TlsConfig, new_token

__all__ = ["SETTINGS", "Cost", "measure_costs"]

#: The settings measured, in order: (name, metrics, token, TLS).
SETTINGS = (("plain", False, False, False), ("metrics", True, False, False),
            ("token", False, True, False), ("TLS", False, False, True),
            ("all three", True, True, True))


@dataclass(frozen=True)
class Cost:
    """One setting's medians over the rounds."""

    name: str
    tps: float
    client_us: float
    server_us: float

    def summary(self) -> dict[str, object]:
        return {"setting": self.name, "tps": round(self.tps),
                "client_cpu_us": round(self.client_us, 1),
                "server_cpu_us": round(self.server_us, 1)}


@contextmanager
def _provider(hosts: str, certs: Certificates, metrics: bool, token: str,
              tls: bool) -> Iterator[ServerProcess]:
    args = ["--zk", hosts]
    if metrics:
        args += ["--metrics-port", "0"]
    if token:
        args += ["--token", token]
    if tls:
        args += ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key]
    with ServerProcess("stages.v3_x", args) as process:
        yield process


async def _one(hosts: str, certs: Certificates, setting: tuple[str, bool, bool, bool],
               calls: int) -> tuple[float, float, float]:
    """(calls per second, client CPU µs per call, server CPU µs per call) of one run."""
    _, metrics, with_token, tls = setting
    token = new_token() if with_token else ""
    with _provider(hosts, certs, metrics, token, tls) as process:
        info = ProviderInfo(host=process.host, port=process.port, token=token)
        client = Client(StaticRegistry([info]), ClientConfig(
            tls=TlsConfig(ca=certs.ca) if tls else None))
        if metrics:
            ClientMetrics().attach(client)
        users = client.async_proxy(UserApi)
        await users.get_user(1)  # connect (and handshake) before measuring
        client_before, server_before = cpu_seconds(), cpu_seconds(process.pid)
        result = await measure_closed_loop(lambda: users.get_user(1), calls, 64)
        client_cpu = cpu_seconds() - client_before
        server_cpu = cpu_seconds(process.pid) - server_before
        await client.aclose()
    assert result.errors == 0, result.error_types
    total = calls + default_warmup(calls)  # the warm-up calls are inside the CPU figures too
    return result.tps, client_cpu / total * 1e6, server_cpu / total * 1e6


async def measure_costs(hosts: str, calls: int, rounds: int) -> list[Cost]:
    """Each setting ``rounds`` times, interleaved; medians per setting."""
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, *_ in SETTINGS}
    with tempfile.TemporaryDirectory() as directory:
        certs = make_certificates(directory)
        for _ in range(rounds):
            for setting in SETTINGS:
                runs[setting[0]].append(await _one(hosts, certs, setting, calls))
    return [Cost(name, statistics.median(r[0] for r in found),
                 statistics.median(r[1] for r in found), statistics.median(r[2] for r in found))
            for name, found in runs.items()]
