"""Run a stage's server as a real child process, and stop it by its own handle.

Benchmarks run the server in its own process so that client and server each get a core, as they
would on two machines; fault tests need a process they can pause (SIGSTOP) or kill (SIGKILL).

The child prints ``listening on HOST:PORT`` once it is bound (port 0: the OS picks a free
port); :class:`ServerProcess` waits for that line, with a deadline, and exposes the address.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from stages.harness.lifecycle import Service

__all__ = ["ServerProcess", "READY_LINE", "cpu_seconds"]

READY_LINE = re.compile(r"listening on (?P<host>[^\s:]+):(?P<port>\d+)")
#: Lines of a child's output kept (the first ones: its start and its address).
MAX_OUTPUT_LINES = 10_000
#: What a v3.3 server prints before it listens when asked to serve its metrics.
METRICS_LINE = re.compile(r"metrics on http://(?P<host>[^\s:/]+):(?P<port>\d+)/metrics")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) a process has used so far, in seconds; this process if None.

    Taken before and after a run, the difference over the wall-clock time says how busy the
    process was (1.0 = one core all the time), and over the number of calls, the CPU per call.

    Another process's time is read from its CPU-time clock, which counts nanoseconds (Linux names
    it ``clock_getcpuclockid(pid)``, which Python does not bind; the id is made as the kernel
    makes it, ``(~pid << 3) | 2``: the whole process's scheduler clock). Where that clock cannot
    be read, from ``/proc/<pid>/stat``, which counts in ticks of 10 ms: too coarse for a run of a
    few hundred calls.

    Raises:
        OSError: neither can be read (the process is gone, or not Linux).
    """
    if pid is None:
        return time.process_time()
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        pass
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name may contain spaces: split after its closing parenthesis; utime and
        # stime (fields 14 and 15 of the line) are then at positions 11 and 12.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess(Service):
    """``python -m <module> server --port 0 <args>`` as a child process, which stops itself if
    this process dies without stopping it (see :mod:`stages.harness.guard`).

    Usage::

        with ServerProcess("stages.v1_0") as proc:
            client = Client(proc.host, proc.port)

    Args:
        module: the stage package to run with ``python -m``.
        args: extra command-line arguments after ``server --host 127.0.0.1 --port 0``.
        startup_timeout: seconds to wait for the ready line.
        env: extra environment variables for the child.
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        startup_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        # Through the guard, which stops the server if this process dies without stopping it.
        self.argv = [sys.executable, "-m", "stages.harness.guard", module, "server", "--host",
                     "127.0.0.1", "--port", "0", *args]
        self.startup_timeout = startup_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.host = ""
        self.port = 0
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of its Prometheus metrics (``--metrics-port``), or None."""
        for line in self.output:
            if match := METRICS_LINE.search(line):
                return f"{match['host']}:{match['port']}"
        return None

    def start(self) -> ServerProcess:
        """Start the child and wait until it reports its address.

        Raises:
            RuntimeError: it exited or stayed silent past the deadline (its output is included).
        """
        # Its standard input is a pipe nobody writes to: it ends when this process closes it or
        # dies, and the guard then stops the server (see stages.harness.guard).
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=self.env, start_new_session=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(f"{self.argv} did not report its address within "
                                   f"{self.startup_timeout} s: {''.join(self.output)}")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if not ready:
                continue
            line = self.process.stdout.readline()
            if not line:
                code = self.process.wait()
                self.process.stdout.close()
                if self.process.stdin is not None:
                    self.process.stdin.close()
                raise RuntimeError(f"{self.argv} exited with {code} before it was ready: "
                                   f"{''.join(self.output)}")
            self.output.append(line)
            if match := READY_LINE.search(line):
                self.host, self.port = match["host"], int(match["port"])
                # Keep reading: a child that writes more than a pipe holds (64 KiB) would
                # otherwise block on its next write, in the middle of serving.
                self._reader = threading.Thread(target=self._keep_reading,
                                                args=(self.process.stdout,), daemon=True,
                                                name=f"output of {self.host}:{self.port}")
                self._reader.start()
                return self

    def _keep_reading(self, stdout: IO[str]) -> None:
        """Read the child's output until it ends; keep the first ``MAX_OUTPUT_LINES`` lines."""
        for line in stdout:
            if len(self.output) < MAX_OUTPUT_LINES:
                self.output.append(line)

    def send_signal(self, signum: int) -> None:
        """Send a signal to the child (SIGSTOP, SIGCONT, SIGKILL...)."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def pause(self) -> None:
        """Freeze the process: its sockets stay open, nobody answers (SIGSTOP)."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused process (SIGCONT)."""
        self.send_signal(signal.SIGCONT)

    def kill(self) -> int:
        """SIGKILL the process and reap it; returns its exit code."""
        return self.stop(sig=signal.SIGKILL)

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the child with ``sig`` (SIGKILL after ``timeout``) and reap it; idempotent."""
        proc = self.process
        if proc is None:
            return 0
        if proc.poll() is None:
            if sig != signal.SIGKILL:
                self.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(5.0)  # the child is gone: its output ends
        elif proc.stdout is not None and not proc.stdout.closed:
            self.output.append(proc.stdout.read())
        if proc.stdout is not None and not self._reader_alive():
            proc.stdout.close()
        if proc.stdin is not None:
            proc.stdin.close()
        return proc.returncode

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()
