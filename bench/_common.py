"""Helpers shared by the benchmark scripts: a ``flux-nb serve`` subprocess, ``/stats``, the official
fal client pointed at it, a private data folder, statistics and a plain-text table.

Every script runs with one command from the repository root (``python bench/NAME.py``), prints a
table, and takes ``--quick`` for a tiny run (what ``tests/test_bench_smoke.py`` uses). Nothing here
touches the user's data folder or the network beyond loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx

REPO = Path(__file__).resolve().parents[1]
APP = "fal-ai/flux-lora"


# -- environment --------------------------------------------------------------------------------


@contextlib.contextmanager
def private_data_dir() -> Iterator[Path]:
    """Point ``FLUX_NB_DATA_DIR`` at a fresh temporary folder (and drop keys/endpoints) meanwhile."""
    folder = Path(tempfile.mkdtemp(prefix="flux-nb-bench-"))
    saved = {k: os.environ.get(k) for k in ("FLUX_NB_DATA_DIR", "FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUX_NB_ENDPOINT", "FLUX_NB_TOKEN")}
    os.environ["FLUX_NB_DATA_DIR"] = str(folder)
    for name in saved:
        if name != "FLUX_NB_DATA_DIR":
            os.environ.pop(name, None)
    try:
        yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def machine() -> str:
    """One line naming the machine, for the tables (the figures depend on it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, {platform.system()}"


# -- a flux-nb serve subprocess -----------------------------------------------------------------


@dataclass
class Serve:
    """A ``flux-nb serve`` process on a free loopback port; ``url`` is its base URL."""

    process: subprocess.Popen
    url: str
    args: tuple[str, ...]

    def stats(self) -> dict[str, Any]:
        """``GET /stats`` (the stats request itself is counted under ``stats``, not a job kind)."""
        headers = {"Authorization": f"Key {self.token}"} if self.token else {}
        response = httpx.get(self.url + "/stats", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    @property
    def token(self) -> str | None:
        args = list(self.args)
        return args[args.index("--token") + 1] if "--token" in args else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_serve(*args: str, module: str = "flux_nb.cli", env: dict[str, str] | None = None, timeout: float = 60.0) -> Serve:
    """Run ``python -m flux_nb.cli serve --port 0 ARGS`` and wait for the URL it prints.

    ``module`` may name another entry point taking the same arguments (see ``_recording_server``).
    """
    argv = [sys.executable, "-m", module, "serve", "--port", "0", *args] if module == "flux_nb.cli" else [sys.executable, "-m", module, "--port", "0", *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO)
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []

    def drain(stream: Any) -> None:  # keep the pipe from filling up and blocking the server
        for line in stream:
            lines.append(line)

    threading.Thread(target=drain, args=(process.stderr,), daemon=True).start()
    found: dict[str, str] = {}

    def read_url() -> None:
        for line in process.stdout:
            if "FLUX_NB_ENDPOINT=" in line:
                found["url"] = line.split("FLUX_NB_ENDPOINT=")[1].strip().rstrip(")")
                break
        for _ in process.stdout:  # drain the rest
            pass

    threading.Thread(target=read_url, daemon=True).start()
    deadline = time.monotonic() + timeout
    while "url" not in found:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"flux-nb serve did not start: {''.join(lines)[-2000:]}")
        time.sleep(0.02)
    return Serve(process, found["url"], tuple(args))


@contextlib.contextmanager
def serve(*args: str, **kwargs: Any) -> Iterator[Serve]:
    server = start_serve(*args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Requests per kind and jobs submitted between two ``/stats`` readings."""
    delta = {kind: after["requests"][kind] - before["requests"].get(kind, 0) for kind in after["requests"]}
    delta.pop("stats", None)
    delta["jobs"] = after["jobs"]["submitted"] - before["jobs"]["submitted"]
    return delta


def job_requests(delta: dict[str, int]) -> int:
    """HTTP requests a client made for its jobs (everything but /stats and /health)."""
    return sum(v for k, v in delta.items() if k not in {"jobs", "health", "stats"})


# -- the official fal client --------------------------------------------------------------------


def point_fal_client_at(url: str) -> Any:
    """Point the official ``fal_client`` at ``url`` (it builds URLs from module globals).

    Returns the ``fal_client`` module. A plain-http base URL needs exactly this patching: fal_client
    has no option for it.
    """
    import fal_client
    import fal_client.client as fal_module

    fal_module.QUEUE_URL_FORMAT = url + "/"
    fal_module.RUN_URL_FORMAT = url + "/run/"
    fal_module.REST_URL = url
    fal_module.CDN_URL = url
    return fal_client


# -- measuring ----------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident memory of this process, MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23x`` (or ``-`` when it means nothing)."""
    if not reference or reference != reference or value != value:
        return "-"
    return f"{value / reference:.2f}x"


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable as plain text, pasteable into docs/benchmarks.md)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    line = lambda items: "| " + " | ".join(str(v).ljust(w) for v, w in zip(items, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def report(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = (), *, json_out: str | None = None, extra: dict[str, Any] | None = None) -> None:
    """Print a titled table with the machine line and notes; optionally write the rows as JSON."""
    print(f"\n## {title}\n")
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    print(table(headers, rows))
    for note in notes:
        print(f"- {note}")
    if json_out:
        Path(json_out).write_text(json.dumps({"title": title, "headers": list(headers), "rows": [list(r) for r in rows], **(extra or {})}, indent=2, default=str))


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (tiny run for the smoke test) and ``--json PATH``."""
    p = argparse.ArgumentParser(description=description.strip().split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny run that only checks the script works")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    return p
