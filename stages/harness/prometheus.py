"""Local Prometheus: a real metrics server that scrapes our endpoints, for tests and notebooks.

What Prometheus is. A time-series database with a query language (PromQL). It stores numbers
such as "requests served so far" or "how many calls took under 50 ms", each with a timestamp and
labels (``job``, ``instance``, ...), and answers questions like "the median latency over the
last minute" by computing over those series.

The pull model. Our servers do not send their metrics anywhere. Each one serves its current
values as text on ``GET /metrics`` (``prometheus_client`` writes that page for us), and
Prometheus fetches ("scrapes") every target on its list at a fixed interval. A scrape that
fails marks the target ``down``: the monitoring system notices a dead server by itself, and a
server never blocks on a slow monitoring system. The price: a value is only as fresh as the last
scrape, and a counter that a server resets at restart must be read through ``rate()``.

Why a real one. Reading our own ``/metrics`` page back would only prove that we can parse what
we wrote. A real server proves what a user will see: that the exposition format is accepted,
that metric names and labels come out as documented (a Counter ``x`` is stored as
``x_total``), and that PromQL such as ``histogram_quantile`` over our buckets gives the numbers
we claim. So, as with ZooKeeper, nothing is mocked: this module starts Debian's ``prometheus``
binary (``/usr/bin/prometheus``, version 2.42 on Debian 12; ``make setup`` installs it) in a
throw-away directory, on a free port of 127.0.0.1, and talks to it over its HTTP API with
``urllib``.

What it offers:

* :class:`LocalPrometheus`: one server. ``start``/``stop`` or ``with``; :meth:`~LocalPrometheus.
  set_targets` changes the endpoints it scrapes while it runs; :meth:`~LocalPrometheus.query`
  runs PromQL; :meth:`~LocalPrometheus.wait_for_targets_up` and
  :meth:`~LocalPrometheus.wait_for_query` wait, with a deadline, for a condition.
* :func:`prometheus_available`, :func:`render_config` and :func:`sample_value`.

Two facts of Prometheus 2.42 that shape every test and notebook using it:

* Durations in its config are integers with a unit: ``500ms`` is valid, ``0.5s`` is not.
  :func:`prometheus_duration` writes them.
* Target changes are not applied at once. The scrape manager applies new target lists at most
  every 5 seconds (a fixed minimum in 2.42), so a target given at start or added with
  :meth:`~LocalPrometheus.set_targets` is scraped for the first time up to about 5 s later.
  Wait for it with :meth:`~LocalPrometheus.wait_for_targets_up`; never sleep and hope.

It logs to ``prometheus.log`` in its directory, never to the console; a failed start raises
:class:`PrometheusStartError` carrying the tail of that log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from stages.harness.guard import Watcher
from stages.harness.lifecycle import Service, tail_of
from stages.harness.ports import free_port

__all__ = [
    "JOB_NAME",
    "PROMETHEUS_BIN",
    "LocalPrometheus",
    "PrometheusAPIError",
    "PrometheusHarnessError",
    "PrometheusStartError",
    "PrometheusUnavailable",
    "prometheus_available",
    "prometheus_duration",
    "render_config",
    "sample_value",
]

#: Debian's server binary (package ``prometheus``).
PROMETHEUS_BIN = Path("/usr/bin/prometheus")

#: The scrape job every target belongs to; Prometheus adds it to each series as ``job="rpc"``.
JOB_NAME = "rpc"

# Everything listens on, and is scraped from, loopback only: a test bench must not be
# reachable from the network.
_HOST = "127.0.0.1"

# One HTTP request to the server may take this long; one readiness probe, less: while it
# blocks we do not notice the process exit, and a probe that times out is simply repeated.
# Between two probes of a condition we wait on the process (so a server that dies is noticed
# at once) for the poll interval.
_REQUEST_TIMEOUT = 5.0
_PROBE_TIMEOUT = 0.5
_POLL_INTERVAL = 0.05

# What Prometheus logs when another process took its port between free_port() and its own
# bind, and how often start() then tries again with a new port.
_BIND_FAILURE = "address already in use"
_BIND_ATTEMPTS = 3

# urllib sends requests through $http_proxy when it is set, 127.0.0.1 included unless
# $no_proxy says otherwise. Our server is on loopback: never go through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: One result of a query: ``{"metric": {label: value}, "value": [unix_time, "number"]}``.
Sample = dict[str, Any]


class PrometheusHarnessError(RuntimeError):
    """Base class for failures of the lab bench's Prometheus (not of the RPC framework)."""


class PrometheusUnavailable(PrometheusHarnessError):
    """No Prometheus can be started here: the binary is missing. The message says how to fix it."""

    def __init__(self, binary: Path) -> None:
        super().__init__(
            f"Prometheus is not installed: {binary} does not exist or is not executable.\n"
            "Install Debian's package: `sudo apt-get install prometheus`"
            " (or run `make setup`, which does that)."
        )


class PrometheusStartError(PrometheusHarnessError):
    """The server exited during start-up, or was not ready before its deadline.

    The message ends with the tail of the server's log.
    """


class PrometheusAPIError(PrometheusHarnessError):
    """The HTTP API refused a request: a bad PromQL query, or a config it would not reload."""


def prometheus_available(binary: str | Path = PROMETHEUS_BIN) -> bool:
    """Tell whether :class:`LocalPrometheus` can start a server on this machine.

    Args:
        binary: The ``prometheus`` executable.

    Returns:
        True if it exists and may be executed. Whether it then starts is only known by
        starting it.
    """
    path = Path(binary)
    return path.is_file() and os.access(path, os.X_OK)


def prometheus_duration(seconds: float) -> str:
    """Write a duration the way Prometheus's config wants it: whole milliseconds, ``"500ms"``.

    Prometheus 2.42 accepts only integers followed by a unit (``1s``, ``1500ms``, ``2m``);
    ``0.5s`` is rejected. Milliseconds are the finest unit and always work.

    Args:
        seconds: A positive duration.

    Returns:
        The duration in milliseconds with the ``ms`` unit.

    Raises:
        ValueError: If it rounds to less than one millisecond.
    """
    millis = round(seconds * 1000)
    if millis < 1:
        raise ValueError(f"a Prometheus duration must be at least 1 ms, got {seconds!r} s")
    return f"{millis}ms"


def _check_target(target: str) -> str:
    """Return ``target`` if it is ``"127.0.0.1:PORT"``, else raise ValueError."""
    host, sep, port = target.rpartition(":")
    if host != _HOST or not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a target is '{_HOST}:PORT', got {target!r}")
    return target


def render_config(targets: Sequence[str], scrape_interval: float) -> str:
    """The text of ``prometheus.yml`` for one job, :data:`JOB_NAME`, scraping ``targets``.

    Every target is fetched at ``http://<target>/metrics`` every ``scrape_interval``; the
    rules are evaluated at the same interval. A scrape may take the whole interval but no
    longer (Prometheus refuses a ``scrape_timeout`` above the interval; its default, 10 s, is
    far above ours).

    Args:
        targets: ``"127.0.0.1:PORT"`` strings, possibly none.
        scrape_interval: Seconds between two scrapes of a target.

    Returns:
        The YAML text. (The target list is written as JSON, which is also valid YAML.)

    Raises:
        ValueError: If a target is not on 127.0.0.1 or the interval is below 1 ms.
    """
    checked = [_check_target(target) for target in targets]
    interval = prometheus_duration(scrape_interval)
    return (
        "# Generated by stages.harness.prometheus; set_targets() rewrites it and reloads.\n"
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  scrape_timeout: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB_NAME}\n"
        "    static_configs:\n"
        f"      - targets: {json.dumps(checked)}\n"
    )


def sample_value(sample: Sample) -> float:
    """The number in one query result: ``float(sample["value"][1])``.

    Prometheus sends values as strings, so that ``NaN`` and ``+Inf`` survive JSON.
    """
    return float(sample["value"][1])


def _describe_targets(targets: list[dict[str, Any]]) -> str:
    """One line per target: where it is scraped, its health and its last scrape error."""
    if not targets:
        return "  (no active targets)"
    return "\n".join(
        f"  {t.get('scrapeUrl')}: {t.get('health')}"
        + (f" (lastError: {t['lastError']})" if t.get("lastError") else "")
        for t in targets
    )


@dataclass
class _Resources:
    """What a server owns outside Python: one process and one directory.

    A :func:`weakref.finalize` on the server releases these if the server object is dropped,
    or the interpreter exits, without ``stop()``. The finalizer must not hold the server
    itself (that would keep it alive forever), so it holds this instead.
    """

    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    #: Stops the process if this one dies without stopping it (see stages.harness.guard).
    watcher: Watcher | None = None

    def stop_process(self, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; always reap the process."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.release()

    def remove_workdir(self) -> None:
        """Delete the directory, if there is one."""
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def release(self) -> None:
        """Stop the process and delete the directory."""
        self.stop_process(timeout=5.0)
        self.remove_workdir()


class LocalPrometheus(Service):
    """A Prometheus server on 127.0.0.1, in a temporary directory, scraping our endpoints.

    Usage::

        with LocalPrometheus(["127.0.0.1:9101"], scrape_interval=0.5) as prom:
            prom.wait_for_targets_up(1)
            print(prom.query("rpc_calls_total"))

    Life cycle: :meth:`start` creates the directory (``<tmp>/rpc-prometheus-*``, holding
    ``prometheus.yml``, ``data/`` and ``prometheus.log``), picks a free port, starts the binary
    and waits until ``GET /-/ready`` answers 200. :meth:`stop` terminates the process it
    started (never any other Prometheus) and deletes the directory. Each start is a fresh
    server with empty storage.
    """

    def __init__(
        self,
        targets: Sequence[str] = (),
        scrape_interval: float = 1.0,
        binary: str | Path = PROMETHEUS_BIN,
        *,
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe a server; nothing starts until :meth:`start`.

        Args:
            targets: ``"127.0.0.1:PORT"`` addresses of HTTP servers serving ``/metrics``.
            scrape_interval: Seconds between two scrapes of each target (whole
                milliseconds); also the rule evaluation interval.
            binary: The ``prometheus`` executable.
            port: The port of Prometheus's own HTTP server (UI and API); by default a free
                one is picked at each start.
            startup_timeout: Seconds :meth:`start` waits for the server to be ready.
            stop_timeout: Seconds :meth:`stop` waits after SIGTERM before it sends SIGKILL.

        Raises:
            ValueError: If a target is not on 127.0.0.1, the interval is below 1 ms, or a
                timeout is not positive.
        """
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be positive")
        # Rendering once checks the targets and the interval before anything starts.
        render_config(targets, scrape_interval)
        self._targets = tuple(targets)
        self._scrape_interval = scrape_interval
        self._binary = Path(binary)
        self._given_port = port
        self._port: int | None = None
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)

    # -- what it is ---------------------------------------------------------------------

    @property
    def targets(self) -> tuple[str, ...]:
        """The configured targets (what Prometheus is told, not what it has scraped yet)."""
        return self._targets

    @property
    def scrape_interval(self) -> float:
        """Seconds between two scrapes of a target."""
        return self._scrape_interval

    @property
    def port(self) -> int:
        """The port of the server's HTTP API.

        Raises:
            RuntimeError: If the server has not been started.
        """
        if self._port is None:
            raise RuntimeError("no port yet: the port is picked when the server starts")
        return self._port

    @property
    def url(self) -> str:
        """The server's base URL, ``"http://127.0.0.1:PORT"``: open it in a browser for the UI.

        Raises:
            RuntimeError: As :attr:`port`.
        """
        return f"http://{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id, or None when no server process is running."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive (even if not ready yet)."""
        return self.pid is not None

    @property
    def workdir(self) -> Path | None:
        """The temporary directory (config, data, log), or None when there is none."""
        return self._resources.workdir

    @property
    def config_path(self) -> Path | None:
        """The generated ``prometheus.yml``, or None when there is no directory."""
        workdir = self._resources.workdir
        return None if workdir is None else workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path | None:
        """The server's log file, or None when there is no directory."""
        workdir = self._resources.workdir
        return None if workdir is None else workdir / "prometheus.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log, under a header, for error messages."""
        log = self.log_path
        if log is None:
            return "(no server directory)"
        return f"--- {log} ---\n{tail_of(log, lines)}"

    def __repr__(self) -> str:
        where = f"{_HOST}:{self._port}" if self._port is not None else "no port"
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {where} {state}>"

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it is ready to answer queries.

        Ready means its storage is open and its config loaded; the targets are scraped for
        the first time a few seconds later (see the module docstring).

        Returns:
            The server itself, to allow ``prom = LocalPrometheus(...).start()``.

        Raises:
            RuntimeError: If the server is already running.
            PrometheusUnavailable: If the binary is missing.
            PrometheusStartError: If the process exits early or is not ready before
                ``startup_timeout``; the message carries the log tail. The process and the
                directory are gone by then.
        """
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        if not prometheus_available(self._binary):
            raise PrometheusUnavailable(self._binary)
        deadline = time.monotonic() + self._startup_timeout
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self._launch()
            try:
                self._wait_ready(deadline)
            except BaseException as exc:
                # Whoever sees start() fail will not call stop() (a `with` block never
                # reaches __exit__), so a half-started server must not outlive this call.
                self.stop()
                # free_port() cannot reserve the port: another process may have bound it in
                # between. If we picked the port, pick another and go again.
                lost_race = isinstance(exc, PrometheusStartError) and _BIND_FAILURE in str(exc)
                if lost_race and self._given_port is None and attempt < _BIND_ATTEMPTS:
                    continue
                raise
            break
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout``) and delete its directory.

        Only the process this object started is signalled. Safe to call twice, or on a
        server that never started.
        """
        self._resources.stop_process(self._stop_timeout)
        self._resources.remove_workdir()
        self._port = None

    # -- what it scrapes ----------------------------------------------------------------

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the list of endpoints to scrape; a running server reloads its config.

        The reload itself is done when this returns, but Prometheus applies the new target
        list up to 5 s later (see the module docstring): follow with
        :meth:`wait_for_targets_up`. A removed target's series stay in the storage; they
        are simply not updated any more.

        Args:
            targets: ``"127.0.0.1:PORT"`` addresses; the whole new list.

        Raises:
            ValueError: If a target is not on 127.0.0.1 (nothing changes then).
            PrometheusAPIError: If the server refuses to reload the config.
        """
        text = render_config(targets, self._scrape_interval)
        self._targets = tuple(targets)
        config = self.config_path
        if config is None or not self.running:
            return  # not running: the list is used at the next start
        config.write_text(text, encoding="utf-8")
        # Needs --web.enable-lifecycle; without it the endpoint answers 403.
        self._request("POST", "/-/reload")

    def active_targets(self) -> list[dict[str, Any]]:
        """The targets the server scrapes now, as ``/api/v1/targets`` describes them.

        Returns:
            One dict per target, with among others ``scrapeUrl``, ``health`` (``"up"``,
            ``"down"``, or ``"unknown"`` before the first scrape), ``lastError`` and
            ``labels``.

        Raises:
            PrometheusAPIError: If the API answers with an error.
            OSError: If the server cannot be reached.
        """
        data = self._api("/api/v1/targets", {"state": "active"})
        targets: list[dict[str, Any]] = data["activeTargets"]
        return targets

    # -- questions ----------------------------------------------------------------------

    def query(self, promql: str, time: float | None = None) -> list[Sample]:
        """Evaluate a PromQL expression at one instant (``/api/v1/query``).

        Args:
            promql: The expression, e.g. ``'rpc_calls_total{job="rpc"}'``.
            time: Unix time to evaluate at; now by default.

        Returns:
            The result list: one ``{"metric": {...}, "value": [time, "number"]}`` per
            series (read numbers with :func:`sample_value`). Empty when nothing matches,
            e.g. before the first scrape. A scalar result (``1 + 1``) comes back as one
            sample with empty labels.

        Raises:
            PrometheusAPIError: If the server rejects the query; the message says why.
            OSError: If the server cannot be reached.
        """
        params = {"query": promql}
        if time is not None:
            params["time"] = repr(time)
        data = self._api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[Sample] = data["result"]
        return result

    def wait_for_targets_up(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` active targets have been scraped successfully.

        Args:
            count: How many targets must be ``up``.
            timeout: Seconds to wait; the first scrape may come about 5 s after a change.

        Returns:
            The targets that are up.

        Raises:
            TimeoutError: If fewer are up at the deadline; the message lists every target
                with its health and last scrape error.
            PrometheusHarnessError: If the server process exits meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            targets = self.active_targets()
            up = [t for t in targets if t.get("health") == "up"]
            if len(up) >= count:
                return up
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self!r}: {len(up)} of {count} targets up after {timeout:g} s:\n"
                    f"{_describe_targets(targets)}"
                )
            self._pause(deadline)

    def wait_for_query(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        timeout: float = 30.0,
    ) -> list[Sample]:
        """Evaluate ``promql`` again and again until ``predicate(result)`` holds.

        Use it to wait for a scrape to bring in a value, e.g.
        ``wait_for_query("rpc_calls_total", lambda r: r and sample_value(r[0]) >= 10)``.

        Args:
            promql: The expression.
            predicate: Called with each result of :meth:`query`.
            timeout: Seconds to wait.

        Returns:
            The first result for which the predicate held.

        Raises:
            TimeoutError: At the deadline; the message shows the last result.
            PrometheusAPIError: If the query is rejected (waiting would not help).
            PrometheusHarnessError: If the server process exits meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self!r}: {promql!r} did not satisfy the condition within {timeout:g} s;"
                    f" last result: {result}"
                )
            self._pause(deadline)

    # -- internals ----------------------------------------------------------------------

    def _launch(self) -> None:
        """Write the config into a fresh directory and start the process, without waiting."""
        self._port = self._given_port if self._given_port is not None else free_port(_HOST)
        workdir = Path(tempfile.mkdtemp(prefix="rpc-prometheus-"))
        self._resources.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(render_config(self._targets, self._scrape_interval), encoding="utf-8")
        command = [
            str(self._binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={_HOST}:{self._port}",
            # Lets set_targets() ask for a reload over HTTP (POST /-/reload).
            "--web.enable-lifecycle",
        ]
        # Prometheus logs to stderr; all of it goes to the file. The child gets its own copy
        # of the descriptor, so ours is closed right away.
        with open(workdir / "prometheus.log", "ab") as log:
            self._resources.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        self._resources.watcher = Watcher(self._resources.process.pid, workdir)

    def _wait_ready(self, deadline: float) -> None:
        """Wait until ``GET /-/ready`` answers 200, or raise PrometheusStartError."""
        process = self._resources.process
        assert process is not None  # _launch() ran
        while True:
            code = process.poll()
            if code is not None:
                raise PrometheusStartError(
                    f"{self!r}: Prometheus exited with code {code} while starting.\n"
                    f"{self.log_tail()}"
                )
            # Ready, and still ours: had our process failed to bind, another server holding
            # the port might be the one answering.
            if self._is_ready() and process.poll() is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PrometheusStartError(
                    f"{self!r}: Prometheus was not ready within {self._startup_timeout:g} s.\n"
                    f"{self.log_tail()}"
                )
            # Wait on the process rather than sleep: if it dies we look again at once.
            with suppress(subprocess.TimeoutExpired):
                process.wait(min(_POLL_INTERVAL, remaining))

    def _is_ready(self) -> bool:
        """One probe of ``/-/ready``: 200 once storage and config are loaded, 503 before."""
        try:
            with _OPENER.open(f"{self.url}/-/ready", timeout=_PROBE_TIMEOUT) as response:
                return bool(response.status == 200)
        except OSError:  # refused (not listening yet), 503 (HTTPError), or a timeout
            return False

    def _pause(self, deadline: float) -> None:
        """Wait one poll interval before probing a condition again (less near the deadline).

        The wait is on the process, so a server that exits is reported at once rather than
        as a timeout.

        Raises:
            PrometheusHarnessError: If the server is not running.
        """
        process = self._resources.process
        if process is None or process.poll() is not None:
            raise PrometheusHarnessError(f"{self!r}: the server is not running.\n{self.log_tail()}")
        remaining = max(0.0, deadline - time.monotonic())
        with suppress(subprocess.TimeoutExpired):
            process.wait(min(_POLL_INTERVAL, remaining))

    def _request(self, method: str, path: str, params: dict[str, str] | None = None) -> bytes:
        """Send one HTTP request to the server and return the body of a 2xx answer.

        Raises:
            PrometheusAPIError: For an error status; the message carries the server's reason.
            OSError: If the server cannot be reached.
        """
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, method=method)
        try:
            with _OPENER.open(request, timeout=_REQUEST_TIMEOUT) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            # The API explains itself in the body: JSON for /api/v1, plain text elsewhere.
            reason = exc.read().decode("utf-8", errors="replace").strip()
            with suppress(ValueError, KeyError, TypeError):
                answer = json.loads(reason)
                reason = f"{answer['errorType']}: {answer['error']}"
            raise PrometheusAPIError(f"{method} {path} failed with HTTP {exc.code}: {reason}") from None

    def _api(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET an ``/api/v1`` endpoint and return its ``data``, checking ``status``.

        Raises:
            PrometheusAPIError: If the status is not ``"success"``.
        """
        answer = json.loads(self._request("GET", path, params))
        if answer.get("status") != "success":
            raise PrometheusAPIError(
                f"GET {path} answered status {answer.get('status')!r}:"
                f" {answer.get('errorType')}: {answer.get('error')}"
            )
        data: dict[str, Any] = answer["data"]
        return data
