"""Scale: time and peak memory of 100, 1,000 and 5,000-cell sweeps at ``--latency 0``.

Each size runs in its own fresh process against its own ``flux-nb serve --latency 0 --workers 8``
and a fresh data folder, with 64x64 images, so the figures are flux-nb's own costs per cell (client,
protocol, store, thumbnails) plus the server's. Reported: wall time, time per cell (flat = linear),
the client's resident memory before the sweep and its peak, the growth per cell, and what the
cells' thumbnails take (what a sweep keeps in memory by design).

    python bench/scale.py                     # 100, 1,000, 5,000 cells
    python bench/scale.py --cells 100,1000    # other sizes
    python bench/scale.py --quick             # 20 and 60 cells (smoke test)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as C

TOKEN = "bench-token"

RUN = """\
import json, sys, time
sys.path.insert(0, {bench!r})
import _common as C
from flux_nb.client import FluxClient
from flux_nb.sweeps import sweep
args = json.loads(sys.argv[1])
client = FluxClient(args["url"], key=args["token"])
client.generate("warm-up", seed=0, image_size=args["size"], cache=False)
sweep("warm-up", client=client, progress=False, live=False, seed=[1, 2], image_size=args["size"])
rss_before = C.current_rss_mb()
start = time.perf_counter()
result = sweep("a tiny square", client=client, progress=False, live=False, max_cells=None,
               concurrency=args["concurrency"], seed=list(range(10, 10 + args["cells"])), image_size=args["size"])
elapsed = time.perf_counter() - start
ok = sum(c.ok for c in result.cells)
thumbs = sum(len(c.thumbnail or b"") for c in result.cells)
print(json.dumps({{"seconds": elapsed, "ok": ok, "rss_before": rss_before, "rss_after": C.current_rss_mb(),
                   "peak": C.peak_rss_mb(), "thumbs": thumbs, "counters": client.aio.counters}}))
client.close()
"""


def run_size(cells: int, size: str, concurrency: int | None) -> dict:
    with C.private_data_dir(), C.serve("--latency", "0", "--workers", "8", "--token", TOKEN) as server:
        payload = json.dumps({"url": server.url, "token": TOKEN, "cells": cells, "size": size, "concurrency": concurrency})
        out = subprocess.run([sys.executable, "-c", RUN.format(bench=str(C.REPO / "bench")), payload],
                             capture_output=True, text=True, env=os.environ.copy(), timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"{cells}-cell sweep failed: {out.stderr[-3000:]}")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        data["server_jobs"] = server.stats()["jobs"]
    return data


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--cells", default="100,1000,5000", help="comma-separated sweep sizes")
    p.add_argument("--size", default="64x64")
    p.add_argument("--concurrency", type=int, default=None, help="sweep concurrency (default: the sweep's own)")
    args = p.parse_args(argv)
    sizes = [20, 60] if args.quick else [int(x) for x in args.cells.split(",")]

    rows = []
    first_per_cell = None
    for cells in sizes:
        data = run_size(cells, args.size, args.concurrency)
        assert data["ok"] == cells, f"{cells - data['ok']} cell(s) failed"
        per_cell = data["seconds"] / cells * 1000
        first_per_cell = first_per_cell or per_cell
        growth = data["peak"] - data["rss_before"]
        rows.append([
            f"{cells:,}", data["seconds"], per_cell, C.ratio(per_cell, first_per_cell), data["rss_before"], data["peak"],
            growth, growth * 1024 / cells, data["thumbs"] / 1024 / cells, sum(data["counters"].values()) / cells,
        ])
    from flux_nb.sweeps import DEFAULT_CONCURRENCY

    C.report(
        f"Scale: sweeps of {', '.join(f'{n:,}' for n in sizes)} cells, {args.size}, serve --latency 0 --workers 8, "
        f"concurrency {args.concurrency or DEFAULT_CONCURRENCY}",
        ["cells", "wall s", "ms per cell", "per cell vs smallest", "RSS before MB", "peak RSS MB", "growth MB",
         "growth KB/cell", "thumbnail KB/cell", "requests/cell"],
        rows,
        ["one fresh client process per size (after one warm-up generate and a 2-cell warm-up sweep); fresh server and data folder per size",
         "growth = peak RSS during the sweep - RSS before it; it includes the SweepResult (cells, requests, thumbnails)"],
        json_out=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
