"""Helpers for the real-browser test: JupyterLab in temp folders, driven by headless Chromium.

Each step is there for a reason a flaky run taught: wait until the kernel is really ready before
running cells, launch Chromium headless with the flags a sandbox-less container needs, and give each
run its own JupyterLab settings, workspace and runtime folders so nothing leaks between runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def missing_requirements() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        return "jupyterlab is not installed in this environment"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` from this venv, every config/runtime folder under ``base``; a context manager."""

    def __init__(self, base: Path, root_dir: Path, env: dict[str, str]):
        self.base = base
        self.root_dir = root_dir
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = env
        self._proc: subprocess.Popen | None = None
        self.log_path = base / "jupyter.log"

    def __enter__(self) -> "JupyterLab":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ)
        env.update(self._env)
        for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                          ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
            folder = self.base / sub
            folder.mkdir(parents=True, exist_ok=True)
            env[name] = str(folder)
        # No "get notified about news?" toast over the panel in screenshots.
        labconfig = self.base / "config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # the kernel is this venv's python
        cmd = [
            str(Path(bindir) / "jupyter-lab"), "--no-browser", "--allow-root",
            f"--IdentityProvider.token={self.token}", "--ip=127.0.0.1", f"--port={self.port}",
            f"--ServerApp.root_dir={self.root_dir}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root_dir)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/api/status", headers={"Authorization": f"token {self.token}"}, timeout=2)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # jupyter shuts its kernels down on SIGTERM
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def notebook_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"


KERNEL_READY_JS = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const ctx = w && w.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  return !!(ctx && ctx.isReady && kernel && kernel.status === 'idle');
}"""


def open_and_run_notebook(page: Any, lab: JupyterLab, path: str, timeout_ms: int = 120_000) -> None:
    """Open ``path`` in JupyterLab, wait until its kernel is really ready, then run all cells."""
    page.goto(lab.notebook_url(path))
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_ms)
    # For a moment after load the toolbar says idle with no kernel; running then would pop the
    # "Select Kernel" dialog. Wait for a started, idle kernel instead.
    page.wait_for_function(KERNEL_READY_JS, timeout=timeout_ms)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def launch_chromium(playwright: Any, profile_dir: Path) -> Any:
    """A headless Chromium context with the flags that work on these machines."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 1200},
    )
