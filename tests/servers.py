"""Helpers to start local servers and talk fal's protocol to them in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Iterator

import httpx

from flux_nb.server import RunningServer, start_server

__all__ = ["RunningServer", "start_test_server", "wait_status", "read_sse", "start_cli_server", "APP"]

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


def start_cli_server(*args: str, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """``flux-nb serve --port 0 ARGS`` in a subprocess; returns it and the URL it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_nb.cli", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "FLUX_NB_ENDPOINT=" not in line:
        proc.kill()
        raise AssertionError(f"no URL line from flux-nb serve: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    url = line.split("FLUX_NB_ENDPOINT=")[1].strip().rstrip(")")
    return proc, url
