"""A 200-cell sweep through injected faults over real loopback HTTP: every cell, every image, no duplicate job.

The server (``live_server(fail_rate=0.2, fault_seed=...)``) answers one request in five with a
429 (Retry-After), a 500, a 503, or, on the idempotent GETs (status, stream, result, image files),
a connection dropped mid-answer. A faulted submit never reaches the app, so it creates no job; the
client may re-send it because the server answered. Everything else is retried with backoff.

Set ``FLUX_NB_RELIABILITY_REPORT`` to a file path to have the figures appended there as JSON lines
(``bench/reliability.py`` does).
"""

from __future__ import annotations

import io
import time

import httpx
from PIL import Image

from flux_nb.sweeps import sweep
from flux_nb.client import FluxClient
from servers import report

CELLS = 200
SIZE = {"width": 64, "height": 64}


def test_200_cell_sweep_at_fail_rate_0_2_completes_with_no_duplicate_job(live_server, data_dir):
    server = live_server(fail_rate=0.2, fault_seed=2024, workers=8, latency=0.0)
    client = FluxClient(endpoint=server.url)
    started = time.monotonic()
    result = sweep(
        "a lighthouse in a storm", seed=list(range(CELLS)), image_size=SIZE, client=client,
        concurrency=16, max_cells=CELLS, progress=False, live=False,
    )
    elapsed = time.monotonic() - started
    client.close()
    stats = httpx.get(server.url + "/stats").json()

    summary = result.summary()
    statuses = [cell.status for cell in result.cells]
    failed = [(cell.index, repr(cell.error)) for cell in result.cells if not cell.ok]
    assert failed == [], failed[:5]
    assert statuses.count("done") == CELLS
    seeds = set()
    for cell in result.cells:
        res = cell.result
        assert res is not None and len(res.images) == 1
        image = res.images[0]
        with Image.open(io.BytesIO(image.data)) as decoded:
            decoded.load()  # the whole image decodes: nothing truncated by a dropped connection
            assert decoded.size == (64, 64)
        assert image.path is not None and image.path.is_file()  # saved in the data folder
        seeds.add(res.seed)
    assert seeds == set(range(CELLS))

    assert stats["faults"]["total"] > 0
    assert {"429", "500", "503", "drop"} <= set(stats["faults"])
    assert stats["jobs"]["submitted"] == CELLS
    assert stats["duplicate_submissions"] == 0
    assert stats["jobs"]["completed"] == CELLS
    report(
        "fault sweep (200 cells, fail-rate 0.2)",
        requests_sent=sum(stats["requests"][k] for k in ("submit", "status", "stream", "result", "cancel", "file")),
        faults_injected=stats["faults"]["total"],
        faults=dict(stats["faults"]),
        results_received=summary.done,
        cells=CELLS,
        jobs_submitted=stats["jobs"]["submitted"],
        duplicates=stats["duplicate_submissions"],
        seconds=round(elapsed, 1),
    )

    # Re-running the same sweep sends nothing: every cell comes from the store.
    before = httpx.get(server.url + "/stats").json()["requests"]["submit"]
    again = sweep(
        "a lighthouse in a storm", seed=list(range(CELLS)), image_size=SIZE, client=FluxClient(endpoint=server.url),
        concurrency=16, max_cells=CELLS, progress=False, live=False,
    )
    assert [c.status for c in again.cells] == ["cached"] * CELLS
    assert httpx.get(server.url + "/stats").json()["requests"]["submit"] == before
