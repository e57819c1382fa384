"""Run a module as ``__main__``, and stop it when the process that started it is gone.

``python -m stages.harness.guard MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this
process, plus one daemon thread that reads standard input until it ends. The parent keeps the
other end of that pipe and never writes to it: the pipe ends when the parent closes it, or when
the parent dies, however it dies (the kernel closes a dead process's files). The child then
stops itself as ``ServerProcess.stop`` would: SIGTERM (a server shuts down gracefully), and
SIGKILL if it is still there :data:`GRACE` seconds later.

Why: a notebook's kernel that is restarted or killed cannot stop the servers it started, and
without this they would run on, unseen, until the machine restarts. ``prctl(PR_SET_PDEATHSIG)``
would need no thread, but it fires when the *thread* that started the child ends, and a server
started from a worker thread (``asyncio.to_thread``) would then die with that thread.

The lab bench's ZooKeeper (a JVM) and Prometheus (a Go program) cannot run this module in their
own process, and their harnesses send them signals of their own (SIGSTOP to freeze a ZooKeeper),
so they are watched from beside instead: :class:`Watcher` starts ``python -m
stages.harness.guard --watch PID [DIR]``, a small process that holds the same kind of pipe. When
the harness stops its server itself, it tells the watcher so (:meth:`Watcher.release`), and the
watcher leaves. When the pipe ends without that word, the harness is gone: the watcher stops
process PID as above (SIGCONT first, for a frozen one) and deletes its directory DIR. A process
is known by its pid *and* its start time, so a pid that the system gave to another process since
is never signalled.
"""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final

__all__ = ["GRACE", "Watcher", "main"]

GRACE: Final = 10.0
"""Seconds between SIGTERM and SIGKILL once the parent is gone."""


def _stop_when_parent_is_gone() -> None:
    # The file descriptor itself, not sys.stdin: a daemon thread blocked inside a buffered
    # reader holds its lock, and the interpreter cannot shut down past a held stdin lock.
    try:
        while os.read(0, 4096):
            pass  # nobody writes: only the end of the pipe matters
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE)  # a thread of its own: the process may well exit before this ends
    os.kill(os.getpid(), signal.SIGKILL)


#: What a harness writes to its watcher when it stops the watched process itself.
RELEASED: Final = b"released"


class Watcher:
    """Stops process ``pid`` (and deletes ``workdir``) if this process dies first.

    Args:
        pid: the process to watch, a child of this process.
        workdir: a directory to delete with it.
    """

    def __init__(self, pid: int, workdir: Path | None = None) -> None:
        command = [sys.executable, "-m", "stages.harness.guard", "--watch", str(pid)]
        self.process = subprocess.Popen(
            [*command, *([str(workdir)] if workdir is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # a Ctrl-C to this process's group is not for the watcher

    def release(self) -> None:
        """The harness stops the watched process itself: the watcher leaves it alone."""
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.write(RELEASED)
                stdin.close()
            except BrokenPipeError:
                pass  # the watcher is gone already
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _identity(pid: int) -> int | None:
    """The start time of a live process (in clock ticks since boot), or None once it is gone or
    a zombie: with its pid, it names one process for good."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return None if fields[0] in ("Z", "X") else int(fields[19])


def watch(pid: int, workdir: str | None) -> None:
    """``--watch``: wait for the end of standard input; unless the harness released the process
    first, stop it (SIGCONT, SIGTERM, SIGKILL after :data:`GRACE`) and delete ``workdir``."""
    started = _identity(pid)
    said = b""
    try:
        while chunk := os.read(0, 4096):
            if len(said) < len(RELEASED):
                said += chunk
    except OSError:
        pass
    if said.startswith(RELEASED):
        return
    if started is not None:
        for signal_number in (signal.SIGCONT, signal.SIGTERM):
            if _identity(pid) == started:
                os.kill(pid, signal_number)
        deadline = time.monotonic() + GRACE
        while _identity(pid) == started and time.monotonic() < deadline:
            time.sleep(0.05)
        if _identity(pid) == started:
            os.kill(pid, signal.SIGKILL)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--watch":
        watch(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
        return
    if len(sys.argv) < 2:
        sys.exit("usage: python -m stages.harness.guard MODULE [ARGS...] | --watch PID [DIR]")
    module = sys.argv[1]
    threading.Thread(target=_stop_when_parent_is_gone, name="rpc-parent-watch",
                     daemon=True).start()
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
