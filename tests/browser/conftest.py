"""Fixtures for real-browser tests of the widget: Chromium, a JupyterLab server, kernel access.

Everything runs on loopback in temporary directories: the server's root, config, data and
runtime dirs are fresh, so no user setting, workspace or kernel spec leaks in, and the repo's
notebook is copied before it is opened (Lab autosaves). The server runs in its own process
group and is killed with it at the end; kernels (their own sessions) are shut down through the
API, and any kernel still alive afterwards is killed by its pid.

Run: `python -m pytest tests/browser -q -p no:cacheprovider -x`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
NOTEBOOK = HERE / "live_widget.ipynb"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 90
KERNEL_READY_S = 60


# ---- Chromium --------------------------------------------------------------------------------


def _install_chromium() -> str:
    """apt-get install chromium (CI runs as root on a fresh machine); returns why it failed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so it cannot be installed here"
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` failed: {exc}"
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            return f"`{' '.join(cmd)}` exited with {done.returncode}:\n{tail}"
    return ""


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's Chromium, installed with apt-get when missing. Fails (never skips) without it."""
    if not CHROMIUM.exists():
        why = _install_chromium()
        if not CHROMIUM.exists():
            pytest.fail(
                f"the browser tests need Chromium at {CHROMIUM} and it is missing: "
                f"{why or 'apt-get install chromium did not create it'}. Install it with "
                "`apt-get update && apt-get install -y chromium` (as root).",
                pytrace=False,
            )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by Playwright (Debian's binary: no `playwright install`)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # a broken environment is a failure, not a skip
        pytest.fail(f"the browser tests need the `playwright` package: {exc}", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


# ---- Jupyter server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_jupyter_env(base: Path) -> dict[str, str]:
    """The environment for a Jupyter process with its own config, data, runtime and IPython
    folders under `base` (made here), none of the user's."""
    env = dict(os.environ)
    for name, var in (("config", "JUPYTER_CONFIG_DIR"), ("data", "JUPYTER_DATA_DIR"),
                      ("runtime", "JUPYTER_RUNTIME_DIR"), ("ipython", "IPYTHONDIR")):
        (base / name).mkdir(exist_ok=True)
        env[var] = str(base / name)
    env["JUPYTER_PLATFORM_DIRS"] = "0"
    env.pop("JUPYTER_PATH", None)
    return env


def wait_until_answering(proc: subprocess.Popen, probe: Callable[[], object], name: str,
                         timeout_s: float, log_tail: Callable[[], str]) -> None:
    """Poll `probe()` (it raises URLError/OSError while the server is not up) until it
    returns; fail with the server's log if the process exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log_tail()}", pytrace=False)
        try:
            probe()
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer in {timeout_s} s:\n{log_tail()}",
                            pytrace=False)
            time.sleep(0.2)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@dataclass
class JupyterServer:
    """A running `jupyter lab` (which also serves Notebook 7's /tree and /notebooks)."""

    url: str
    token: str
    root_dir: Path
    runtime_dir: Path
    log_path: Path
    process: subprocess.Popen
    clients: list[Any] = field(default_factory=list)

    def api(self, method: str, path: str, body: object = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def page_url(self, route: str) -> str:
        return f"{self.url}/{route.lstrip('/')}?token={self.token}"

    def copy_notebook(self, name: str) -> str:
        """Copy the fixture notebook into the server's root as `name` (opened, never the repo's)."""
        shutil.copyfile(NOTEBOOK, self.root_dir / name)
        return name

    def kernel_id(self, notebook: str, timeout: float = KERNEL_READY_S) -> str:
        """The id of the kernel of the session that has `notebook` open."""
        deadline = time.monotonic() + timeout
        while True:
            for session in self.api("GET", "/api/sessions"):
                if session.get("path") == notebook and session.get("kernel"):
                    return session["kernel"]["id"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no kernel session for {notebook} after {timeout:.0f} s")
            time.sleep(0.2)

    def kernel(self, notebook: str) -> KernelProbe:
        """A client of the same kernel as the page, to read and change kernel state."""
        from jupyter_client import BlockingKernelClient

        kid = self.kernel_id(notebook)
        conn = self.runtime_dir / f"kernel-{kid}.json"
        client = BlockingKernelClient(connection_file=str(conn))
        client.load_connection_file()
        client.start_channels()
        client.wait_for_ready(timeout=KERNEL_READY_S)
        self.clients.append(client)
        return KernelProbe(client)

    def shutdown_notebook(self, notebook: str) -> None:
        for session in self.api("GET", "/api/sessions"):
            if session.get("path") == notebook:
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class KernelProbe:
    """Runs code in the notebook's kernel through its connection file."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute `code`; returns its stdout, raises with the traceback if it failed."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content.get("traceback", [])))

        reply = self.client.execute_interactive(
            code, timeout=timeout, output_hook=hook, store_history=False, allow_stdin=False
        )
        if reply["content"]["status"] != "ok" or errors:
            raise AssertionError(f"kernel code failed:\n{code}\n{''.join(errors)}")
        return "".join(out)

    def value(self, expr: str, timeout: float = 60) -> Any:
        """The JSON value of a Python expression evaluated in the kernel."""
        marker = "__featmon_probe__"
        text = self.run(
            f"import json as _json\nprint({marker!r} + _json.dumps({expr}, default=str))",
            timeout,
        )
        for line in text.splitlines():
            if line.startswith(marker):
                return json.loads(line[len(marker):])
        raise AssertionError(f"no value printed for {expr!r}: {text!r}")


def _kernel_pids(runtime_dir: Path) -> list[int]:
    """Processes started with a connection file in our runtime dir (our kernels, nothing else)."""
    needle = str(runtime_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    # Whatever is left of the group (the server's own children).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """`jupyter lab` on a free loopback port with a temp root and temp Jupyter dirs."""
    base = tmp_path_factory.mktemp("jupyter")
    env = {**isolated_jupyter_env(base), "PYTHONUNBUFFERED": "1"}
    root, config, runtime = base / "root", base / "config", base / "runtime"
    root.mkdir()
    # No "official Jupyter news" toast (it would cover screenshots) and no update check.
    _write_json(
        config / "lab/user-settings/@jupyterlab/apputils-extension/"
        "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    # window.jupyterapp in both Lab and Notebook 7 (the tests drive the apps' commands).
    _write_json(
        config / "jupyter_server_config.json",
        {
            "LabApp": {"expose_app_in_browser": True},
            "JupyterNotebookApp": {"expose_app_in_browser": True},
        },
    )
    token = secrets.token_hex(16)
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.open_browser=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root, runtime, log_path, proc)
    try:
        wait_until_answering(proc, lambda: server.api("GET", "/api/status", timeout=2),
                             "jupyter lab", SERVER_START_S, server.log_tail)
        yield server
    finally:
        for client in server.clients:
            with contextlib.suppress(Exception):
                client.stop_channels()
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                for kernel in server.api("GET", "/api/kernels", timeout=5):
                    server.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=20)
        _stop_process_group(proc)
        for pid in _kernel_pids(runtime):  # a kernel the server failed to stop
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


# ---- pages -------------------------------------------------------------------------------------

# Installed before any page script: counts every snapshot the widget applies and logs each
# apply's duration (the widget only keeps the last one in window.__featmonStats).
APPLY_LOG_SCRIPT = """
(() => {
  const log = [];
  let last = 0;
  const stats = { applied: 0 };
  Object.defineProperty(stats, "lastApplyMs", {
    enumerable: true,
    get: () => last,
    set: (ms) => { last = ms; log.push(ms); },
  });
  Object.defineProperty(window, "__featmonApplyLog", { value: log });
  window.__featmonStats = stats;
})();
"""


@pytest.fixture(scope="session")
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open pages in fresh browser contexts (closed at the end); console errors are collected."""
    contexts: list[Any] = []

    def open_page(width: int = 1400, height: int = 1400) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        context.add_init_script(APPLY_LOG_SCRIPT)
        page = context.new_page()
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        return page

    yield open_page
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()
