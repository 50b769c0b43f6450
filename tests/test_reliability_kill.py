"""Kernel death: a process running a sweep is SIGKILLed midway; a new process loses nothing and pays nothing twice.

Real processes throughout: ``flux-nb serve --latency ...`` serves; a Python subprocess (the "kernel")
runs the sweep with every cell submitted at once and is killed with SIGKILL once some cells are
finished and the rest are queued or running on the server. A second subprocess then resumes (the
same sweep, or ``flux_nb.recover()`` first): cells saved before the kill come from disk, jobs in
flight are fetched by their journaled request id, and the server's counters show every job
submitted exactly once.

The kill waits until the server has created every job, so no submit is on the wire when it lands:
a submit whose answer never arrived is the one case flux-nb cannot resolve (the job may exist but
its id is unknown); ``test_reliability_timeouts`` covers that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from flux_nb.store import Store
from servers import report, start_cli_server, stop_process

CELLS = 24

SWEEP = """
import json, sys
from flux_nb.client import FluxClient
from flux_nb.sweeps import sweep
client = FluxClient(endpoint=sys.argv[1])
if sys.argv[2] == "recover":
    from flux_nb.recover import recover
    recovered = recover(client)
    print(json.dumps({"recovered": sorted(r.request_id for r in recovered)}), flush=True)
r = sweep("a harbour at dawn", seed=list(range(%d)), image_size={"width": 64, "height": 64}, client=client,
          concurrency=%d, max_cells=%d, progress=False, live=False)
print(json.dumps({"statuses": [c.status for c in r.cells], "errors": [repr(c.error) for c in r.cells if c.error],
                  "request_ids": [c.result.request_id if c.result else None for c in r.cells]}), flush=True)
client.close()
""" % (CELLS, CELLS, CELLS)


def stats(url: str) -> dict:
    return httpx.get(url + "/stats", timeout=10).json()


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def server():
    proc, url = start_cli_server("--workers", "2", "--latency", "0.25")
    yield url
    stop_process(proc, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("via", ["sweep", "recover"])
def test_sweep_killed_midway_resumes_from_disk_and_journal(server, data_dir, via):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kernel = subprocess.Popen([sys.executable, "-c", SWEEP, server, "sweep"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: stats(server)["jobs"]["submitted"] == CELLS, 30, "every job to be created")
        # let some finish, and be saved, while the others are still queued or running
        wait_for(lambda: stats(server)["jobs"]["completed"] >= CELLS // 3, 30, "a third of the jobs to finish")
        time.sleep(0.3)
        assert kernel.poll() is None, kernel.communicate()
    finally:
        stop_process(kernel, signal.SIGKILL, check=False)
    assert kernel.returncode == -signal.SIGKILL

    store = Store(data_dir)
    saved_ids = {entry.request_id for entry in store.history(limit=None)}
    saved_before = len(saved_ids)
    journaled = {job.request_id for job in store.pending()}
    # A kill between "saved" and "journal cleared" leaves a cell both saved and journaled: it
    # counts as saved, and only the journaled ids that were never saved were in flight.
    in_flight = journaled - saved_ids
    assert 0 < saved_before < CELLS
    assert in_flight, "jobs in flight at the kill are journaled"
    assert saved_before + len(in_flight) == CELLS  # every cell is either saved or journaled
    submits_before = stats(server)["requests"]["submit"]

    resumed = subprocess.run([sys.executable, "-c", SWEEP, server, via], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    outcome = lines[-1]
    assert outcome["errors"] == []
    statuses = outcome["statuses"]
    if via == "recover":
        assert set(lines[0]["recovered"]) == journaled
        assert statuses == ["cached"] * CELLS  # recover() saved them; the sweep reads everything from disk
    else:
        assert statuses.count("cached") == saved_before
        assert statuses.count("done") == len(in_flight)
        # the cells that were in flight carry the very request ids the dead process submitted
        done_ids = {rid for rid, st in zip(outcome["request_ids"], statuses) if st == "done"}
        assert done_ids == in_flight

    after = stats(server)
    assert after["requests"]["submit"] == submits_before  # nothing was submitted again
    assert after["jobs"]["submitted"] == CELLS
    assert after["duplicate_submissions"] == 0
    assert Store(data_dir).pending() == []
    assert len(Store(data_dir).history(limit=None)) == CELLS
    report(
        f"kill -9 mid-sweep, resume via {via} ({CELLS} cells)",
        requests_sent=sum(after["requests"][k] for k in ("submit", "status", "stream", "result", "cancel", "file")),
        faults_injected=0,
        results_received=CELLS,
        saved_before_kill=saved_before,
        recovered_by_request_id=len(in_flight),
        jobs_submitted=after["jobs"]["submitted"],
        duplicates=after["duplicate_submissions"],
    )

