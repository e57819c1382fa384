"""What the lab bench starts does not outlive the process that started it.

A notebook's kernel that is killed (or a test run stopped with SIGKILL) cannot stop what it
started. Its v2.1/v3.x servers stop themselves (``stages.harness.guard``, tested in test_peers);
its ZooKeeper and Prometheus are stopped by a watcher beside them, which also deletes their
directory. A harness that stops its server itself releases the watcher, which then touches
nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import running, wait_until

from stages.harness.guard import GRACE, Watcher

STARTERS = {
    "zookeeper": "from stages.harness.zookeeper import LocalZooKeeper\n"
                 "server = LocalZooKeeper().start()\n",
    "prometheus": "from stages.harness.prometheus import LocalPrometheus\n"
                  "server = LocalPrometheus([]).start()\n",
}


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_a_server_and_its_directory_go_when_the_process_that_started_it_dies(
        kind: str, tmp_path: Path) -> None:
    parent = tmp_path / "parent.py"
    parent.write_text(f"import time\n{STARTERS[kind]}"
                      "print(server.pid, server.workdir, flush=True)\n"
                      "time.sleep(120)\n")
    with subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE,
                          text=True) as starter:
        assert starter.stdout is not None
        pid, workdir = starter.stdout.readline().split()
        assert running(int(pid)) and Path(workdir).is_dir()
        starter.kill()  # no chance to stop its server: SIGKILL
        starter.wait()
    wait_until(lambda: not running(int(pid)), GRACE + 10, f"the orphaned {kind} stops")
    wait_until(lambda: not Path(workdir).exists(), 10, f"the {kind}'s directory is deleted")


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def test_a_released_watcher_leaves_its_process_and_directory_alone(tmp_path: Path) -> None:
    with sleeper() as process:
        watcher = Watcher(process.pid, tmp_path)
        watcher.release()
        assert watcher.process.returncode == 0
        assert process.poll() is None and tmp_path.is_dir()
        process.kill()


def test_a_watcher_whose_harness_is_gone_stops_its_process_even_a_frozen_one(
        tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with sleeper() as process:
        process.send_signal(19)  # SIGSTOP: frozen, as ZooKeeper's pause() leaves it
        watcher = Watcher(process.pid, workdir)
        assert watcher.process.stdin is not None
        watcher.process.stdin.close()  # the pipe ends without the word: the harness is gone
        assert process.wait(GRACE + 5) != 0
        watcher.process.wait(10)
    assert not workdir.exists()


def test_a_watcher_does_not_signal_a_process_that_ended_before_it_was_told() -> None:
    with sleeper() as process:
        watcher = Watcher(process.pid)
        process.kill()
        process.wait()
        assert watcher.process.stdin is not None
        watcher.process.stdin.close()
        assert watcher.process.wait(10) == 0  # nothing to stop, and no error on the way
