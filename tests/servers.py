"""Helpers to start local servers and talk fal's protocol to them in tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import httpx

from flux_nb.server import RunningServer, start_server

__all__ = [
    "RunningServer", "start_test_server", "wait_status", "read_sse", "sse_statuses", "start_cli_server",
    "server_stderr", "stop_process", "report", "APP",
]

APP = "fal-ai/flux-lora"


def start_test_server(**options: Any) -> RunningServer:
    """A server on a free loopback port with :func:`flux_nb.server.app.create_app` ``options``."""
    return start_server(dict(options), host="127.0.0.1", port=0)


def wait_status(client: httpx.Client, status_url: str, wanted: str, timeout: float = 20.0, **params: Any) -> dict:
    """Poll a status URL until it reports ``wanted`` (or COMPLETED); returns that status body."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(status_url, params=params).json()
        if body["status"] in (wanted, "COMPLETED"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"status stayed {body['status']} (wanted {wanted})")
        time.sleep(0.02)


def read_sse(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """Raw SSE framing: yields ("data", payload) and ("comment", text), checking blank-line ends."""
    pending: list[str] = []
    for line in response.iter_lines():
        if line == "":
            assert pending, "empty event"
            pending = []
            continue
        pending.append(line)
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        else:
            field, _, value = line.partition(":")
            assert field == "data", f"unexpected SSE field {field!r}"
            yield "data", value.strip()
    assert not pending, "stream ended in the middle of an event"


def sse_statuses(client: httpx.Client, status_url: str, **params: Any) -> list[dict]:
    """Every status object a status stream sends until it ends."""
    with client.stream("GET", status_url + "/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [json.loads(value) for kind, value in read_sse(response) if kind == "data"]


def start_cli_server(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """``flux-nb serve --port 0 ARGS`` in a subprocess; returns it and the URL it printed.

    ``env`` replaces the environment (default: this process's). Both pipes are drained in threads
    so a chatty server never blocks on a full pipe; :func:`server_stderr` gives what it wrote to
    stderr. Stop it with :func:`stop_process`.
    """
    full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_nb.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_lines: list[str] = []
    found: list[str] = []
    url_seen = threading.Event()

    def drain_stderr() -> None:
        for line in proc.stderr:
            stderr_lines.append(line)

    def drain_stdout() -> None:
        for line in proc.stdout:
            if not found and "FLUX_NB_ENDPOINT=" in line:
                found.append(line.split("FLUX_NB_ENDPOINT=")[1].strip().rstrip(")"))
                url_seen.set()
        url_seen.set()  # stdout closed: the process ended without a URL

    threads = [threading.Thread(target=f, daemon=True) for f in (drain_stderr, drain_stdout)]
    for thread in threads:
        thread.start()
    proc._flux_nb_stderr = stderr_lines  # type: ignore[attr-defined]
    proc._flux_nb_drains = threads  # type: ignore[attr-defined]
    url_seen.wait(timeout)
    if not found:
        stop_process(proc, signal.SIGKILL, check=False)
        raise AssertionError(f"no URL line from flux-nb serve within {timeout} s: {server_stderr(proc)[-3000:]}")
    return proc, found[0]


def server_stderr(proc: subprocess.Popen) -> str:
    """What a :func:`start_cli_server` process has written to stderr so far."""
    return "".join(getattr(proc, "_flux_nb_stderr", []))


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0, *, check: bool = True) -> int | None:
    """Send ``sig``, wait up to ``timeout`` s, then kill; close its pipes. Returns the exit code.

    ``check=True`` fails the test (after killing it) when the process ignored the signal.
    """
    ignored = False
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            ignored = True
            proc.kill()
            proc.wait(10)
    for thread in getattr(proc, "_flux_nb_drains", []):
        thread.join(5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if ignored and check:
        raise AssertionError(f"process {proc.pid} did not stop within {timeout} s of signal {sig}")
    return proc.returncode


def report(name: str, **figures: Any) -> None:
    """Append a reliability test's figures for ``bench/reliability.py`` (only when asked to, through
    ``FLUX_NB_RELIABILITY_REPORT``)."""
    path = os.environ.get("FLUX_NB_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": name, **figures}) + "\n")
