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
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
from typing import Final

__all__ = ["GRACE", "main"]

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


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m stages.harness.guard MODULE [ARGS...]")
    module = sys.argv[1]
    threading.Thread(target=_stop_when_parent_is_gone, name="rpc-parent-watch",
                     daemon=True).start()
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
