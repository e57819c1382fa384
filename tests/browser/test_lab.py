"""`make lab` checked in a real browser, as a learner meets it.

JupyterLab is started the way ``make lab`` starts it (``jupyter lab notebooks``, ``--allow-root``
as root), on a free port of 127.0.0.1 with a token of our own; its HTTP API must list every
notebook; then Debian's Chromium, driven headless by Playwright, opens the overview notebook,
clears its saved outputs, runs all its cells from the Run menu, and every code cell must have run
and none may show an error.

These tests need ``/usr/bin/chromium`` and the ``playwright`` package. ``make lab-check`` installs
both and sets ``RPC_LAB_CHECK=1``: there a missing piece fails the test. Anywhere else (``make
test``) the tests are skipped, with the reason: a run costs about as much as running the overview
notebook again, which nbval already does in ``make test``.

``RPC_LAB_SCREENSHOT=1`` also saves what the browser shows after the run to ``docs/lab.png`` (the
picture in the README); without it the test leaves the work tree as it found it.

JupyterLab runs with its own runtime, config, settings and workspace folders (temporary), so the
user's own JupyterLab state is neither used nor changed; the settings turn off autosave (running
the cells must not write the notebook back into the repository) and the news pop-up (no request
leaves the machine). Everything JupyterLab starts (kernels, and what the notebook starts in them)
is found again at the end and must be gone once JupyterLab has stopped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_until

try:
    from playwright.sync_api import Page, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # only `make lab-check` installs it
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SCREENSHOT = ROOT / "docs" / "lab.png"
CHROMIUM = Path("/usr/bin/chromium")
#: The notebook a learner opens first; until it exists, the first lesson in sorted order.
OVERVIEW = "00_overview.ipynb"

#: Set by `make lab-check`: a missing Chromium or Playwright is then a failure, not a skip.
LAB_CHECK = os.environ.get("RPC_LAB_CHECK") == "1"
TAKE_SCREENSHOT = os.environ.get("RPC_LAB_SCREENSHOT") == "1"

#: Seconds for JupyterLab to answer, for the notebook to open, for all its cells to run.
SERVER_START = 60
PAGE_LOAD = 60
RUN_ALL = 240

#: Chromium's own traffic off: this machine reaches no web, only 127.0.0.1 is used.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

#: JupyterLab settings (user settings, in a temporary folder): no autosave, no news pop-up.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}

pytestmark = pytest.mark.timeout(SERVER_START + PAGE_LOAD + RUN_ALL + 120)


def lesson_to_open() -> str:
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    return OVERVIEW if OVERVIEW in names else names[0]


@pytest.fixture(scope="module", autouse=True)
def browser_check_wanted() -> None:
    missing = [what for what, there in [
        (f"Chromium ({CHROMIUM}; scripts/ensure-chromium.sh installs it)", CHROMIUM.exists()),
        ("the playwright package (pip install the 'browser' extra)", sync_playwright is not None),
    ] if not there]
    if LAB_CHECK and missing:
        pytest.fail(f"RPC_LAB_CHECK=1 but missing: {', '.join(missing)}", pytrace=False)
    if not LAB_CHECK:
        reason = "the browser check of `make lab` runs under `make lab-check` (RPC_LAB_CHECK=1)"
        pytest.skip(f"{reason}; missing here: {', '.join(missing)}" if missing else reason)


# --- processes: what JupyterLab started, found again after it stopped ---------------------------

#: A process is (pid, start time in clock ticks since boot): a reused pid is another process.
Proc = tuple[int, int]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state letter, start time) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields after its last ")" do not.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _started_by(server_pid: int, marker: bytes) -> set[Proc]:
    """Every live process below the server, and every one whose environment carries ``marker``.

    The environment finds what a kernel started and left behind after the kernel itself died (a
    child then belongs to init, not to the server any more); the parent links find what was
    started with an environment of its own.
    """
    children: dict[int, list[int]] = {}
    found: set[Proc] = set()
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is None:
            continue
        children.setdefault(stat[0], []).append(pid)
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add((pid, stat[2]))
        except OSError:
            pass
    todo = [server_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            stat = _stat(child)
            if stat is not None:
                found.add((child, stat[2]))
                todo.append(child)
    return found


def _alive(procs: set[Proc]) -> set[Proc]:
    """The processes of ``procs`` still running (a zombie has stopped: its parent just has not
    collected it, which in a container's init may never happen)."""
    live = set()
    for pid, started in procs:
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            live.add((pid, started))
    return live


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return "?"


# --- JupyterLab, as `make lab` starts it ---------------------------------------------------------

@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?token={self.token}", timeout=10) as answer:
            return json.load(answer)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(lab: Lab, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"JupyterLab exited with {server.returncode}:\n{lab.log_tail()}")
    try:
        lab.get("/api/status")
    except (urllib.error.URLError, OSError):
        return False
    return True


def _stop(server: subprocess.Popen[bytes], marker: bytes) -> list[str]:
    """Stop JupyterLab and all it started; return the processes that outlived it (then killed).

    SIGTERM to its process group: the server shuts its kernels down (each kernel is killed with
    its own process group if it does not end when asked) and exits.
    """
    ours = _started_by(server.pid, marker)
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    ours |= _started_by(server.pid, marker)
    try:
        wait_until(lambda: not _alive(ours), timeout=15, what="JupyterLab's processes end")
        return []
    except AssertionError:
        left = _alive(ours)
    described = [f"{pid}: {_command(pid)}" for pid, _ in sorted(left)]
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return described


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("jupyter")
    for plugin, values in LAB_SETTINGS.items():
        file = home / "settings" / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    # JupyterLab makes a checkpoint (a copy) of a notebook it opens: into the temporary folder,
    # not into notebooks/.ipynb_checkpoints.
    config = {"FileCheckpoints": {"checkpoint_dir": str(home / "checkpoints")}}
    (home / "config").mkdir()
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    token = secrets.token_hex(24)
    marker = f"RPC_LAB_CHECK_RUN={secrets.token_hex(8)}"
    env = {**os.environ,
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "RPC_BENCH": "short",
           marker.split("=")[0]: marker.split("=")[1]}
    port = _free_port()
    # `make lab`'s command and flags, then what a test needs: no browser of its own, our port
    # (and no other: without port_retries=0 it would quietly move to another), loopback only,
    # our token.
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "notebooks",
               *(["--allow-root"] if os.geteuid() == 0 else []),
               "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
               "--ServerApp.root_dir=notebooks"]
    log = home / "jupyterlab.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, log)
    try:
        wait_until(lambda: _answers(lab, server), timeout=SERVER_START,
                   what="JupyterLab's HTTP API answers")
        yield lab
    finally:
        left = _stop(server, marker.encode())
    assert not left, "still running after JupyterLab stopped (now killed):\n" + "\n".join(left)


# --- the tests -----------------------------------------------------------------------------------

def test_the_server_lists_every_notebook(lab: Lab) -> None:
    listing = lab.get("/api/contents")
    listed = {item["name"]: item["type"] for item in listing["content"]}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert listed.get(path.name) == "notebook", f"{path.name} not listed: {sorted(listed)}"


#: The kernel is idle, as the page shows it (the circle in the status bar).
KERNEL_IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'

#: The code cells of the open notebook, as the page shows them: input prompt ("[3]:", "[*]:",
#: "[ ]:"), the text of its stderr-rendered outputs (an error's traceback is rendered with that
#: same MIME type as a stream to stderr), and the first characters of its source.
CODE_CELLS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  return [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')].map(cell => ({
    prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
    stderr: [...cell.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(output => output.textContent),
    source: [...cell.querySelectorAll('.jp-InputArea-editor .cm-line')]
      .map(line => line.textContent).join('\\n').slice(0, 100),
  }));
}"""

#: True once a Run All is over: some cell has run, none is waiting or running ("[*]"), and the
#: kernel is idle. After an error JupyterLab runs no further cell and leaves them "[ ]".
RUN_OVER = "() => { const cells = (" + CODE_CELLS + """)();
  const idle = document.querySelector('""" + KERNEL_IDLE + """');
  return cells !== null && idle !== null && !cells.some(c => c.prompt === '[*]:')
    && cells.some(c => /^\\[\\d+\\]:$/.test(c.prompt));
}"""

NEVER_RUN = "() => (" + CODE_CELLS + ")()?.every(c => !/\\d/.test(c.prompt)) ?? false"

RUN_STARTED = "() => (" + CODE_CELLS + ")()?.some(c => /\\d|\\*/.test(c.prompt)) ?? false"


def _kernel_connected(lab: Lab, name: str) -> Callable[[], bool]:
    """A condition: the server has started the notebook's kernel and the page is connected to it.

    Asks the server at most every 0.1 s (a busy poll would slow the kernel's start).
    """
    asked = [0.0]

    def connected() -> bool:
        if time.monotonic() < asked[0] + 0.1:
            return False
        asked[0] = time.monotonic()
        kernels = [s["kernel"] for s in lab.get("/api/sessions") if s["path"] == name]
        return any(k["connections"] > 0 and k["execution_state"] == "idle" for k in kernels)

    return connected


def _writes_a_file(method: str, url: str) -> bool:
    path = urllib.parse.urlsplit(url).path
    return (method != "GET" and path.startswith("/api/contents")
            and not (method == "POST" and path.endswith("/checkpoints")))


def _is_error(text: str) -> bool:
    """An error output: IPython's traceback, or the last line of one (a SyntaxError has no
    "Traceback" header)."""
    return "Traceback" in text or re.search(r"^\w*(Error|Exception)\b", text, re.M) is not None


def _menu(page: Page, menu: str, command: str) -> None:
    """Choose a menu item as a learner does: the menu's name in the bar, then the item. The item
    is found by JupyterLab's command id, which does not change with the label's wording."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(f"^{menu}$")).click()
    item = page.locator(f'.lm-Menu .lm-Menu-item[data-command="{command}"]')
    assert "lm-mod-disabled" not in (item.get_attribute("class") or ""), f"{command} is disabled"
    item.click()


@pytest.mark.parametrize("name", [lesson_to_open()])
def test_the_overview_notebook_runs_in_the_browser_without_errors(lab: Lab, name: str) -> None:
    path = NOTEBOOKS / name
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code_cells = sum(cell["cell_type"] == "code" for cell in notebook["cells"])

    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # What the page asks the server to write: a save is a PUT to /api/contents/<path>.
            # (A POST to .../checkpoints makes a checkpoint, kept in the temporary folder.)
            writes: list[str] = []
            page.on("request", lambda request: writes.append(f"{request.method} {request.url}")
                    if _writes_a_file(request.method, request.url) else None)
            page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}", timeout=PAGE_LOAD * 1000)
            # Open once its kernel is idle. The page's execution indicator alone is not enough:
            # it says "idle" for a moment before there is any kernel ("No Kernel | Initializing"
            # in the status bar), and Run All then runs nothing. Once the server counts the
            # page's connection, the indicator's "idle" is the kernel's.
            wait_until(_kernel_connected(lab, name), timeout=PAGE_LOAD,
                       what=f"the kernel of {name} started and the page connected to it")
            page.wait_for_selector(KERNEL_IDLE, timeout=PAGE_LOAD * 1000)
            # And once all its code cells are in the page: every cell is, in JupyterLab 4's
            # default windowing mode; were only the visible ones, this says so instead of
            # checking part of the notebook.
            try:
                page.wait_for_function(f"() => ({CODE_CELLS})()?.length >= {code_cells}",
                                       timeout=PAGE_LOAD * 1000)
            except PlaywrightTimeout:
                pass  # said just below, with the count
            shown = page.evaluate(CODE_CELLS) or []
            assert len(shown) == code_cells, f"the page shows {len(shown)} code cells of {name}"

            # The saved outputs go first, so that every number and output seen next is new.
            _menu(page, "Edit", "editmenu:clear-all")
            page.wait_for_function(NEVER_RUN, timeout=10_000)
            _menu(page, "Run", "runmenu:run-all")
            page.wait_for_function(RUN_STARTED, timeout=10_000)
            try:
                page.wait_for_function(RUN_OVER, timeout=RUN_ALL * 1000, polling=250)
                over = True
            except PlaywrightTimeout:
                over = False
            shown = page.evaluate(CODE_CELLS)
            if not over:
                running = [c["source"] for c in shown if c["prompt"] == "[*]:"]
                pytest.fail(f"{name}: Run All not over in {RUN_ALL} s; still running or waiting: "
                            f"{running[0] if running else '?'!r}...", pytrace=False)

            if TAKE_SCREENSHOT:
                # The first figure the notebook draws, in the middle of the view.
                page.evaluate("""() => document.querySelector(
                  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')
                  ?.scrollIntoView({block: 'center'})""")
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=SCREENSHOT)
        finally:
            browser.close()

    failed = [f"cell {i} ({cell['source']!r}...):\n{text[-1500:]}"
              for i, cell in enumerate(shown, 1) for text in cell["stderr"] if _is_error(text)]
    assert not failed, f"{name}: errors in the browser:\n" + "\n\n".join(failed)
    not_run = [f"cell {i} {cell['prompt']} ({cell['source']!r}...)"
               for i, cell in enumerate(shown, 1) if not re.fullmatch(r"\[\d+\]:", cell["prompt"])]
    assert not not_run, f"{name}: cells that did not run:\n" + "\n".join(not_run)
    # Autosave is off and nothing was saved: the run leaves the lesson as it was.
    assert not writes, f"the page wrote files: {writes}"
