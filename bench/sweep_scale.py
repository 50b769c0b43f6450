"""A 1,000-cell sweep against ``flux-nb serve --latency 0.2 --workers 16``: wall time vs the
server-bound ideal, the client's CPU time, and peak memory.

The ideal is what the server alone allows: ``ceil(cells / workers) * latency`` (every worker busy
all the time, zero overhead). Memory stays bounded because finished cells keep only a small JPEG
thumbnail; full images are on disk in the store. The second run is the same sweep again: every cell
comes from the cache with zero requests.

    python bench/sweep_scale.py                 # 1,000 cells (about a minute on 2 cores)
    python bench/sweep_scale.py --quick         # 32 cells, a smoke test
    python bench/sweep_scale.py --tracemalloc   # also Python's own allocation peak (slower)
"""

from __future__ import annotations

import math
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import current_rss_mb, parser, peak_rss_mb, private_data_dir, report, serve  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=None, help="cells in flight (default: --workers)")
    p.add_argument("--size", default="square", help="image size of every cell (default square, 512x512)")
    p.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slows the run)")
    args = p.parse_args()
    if args.quick:
        args.cells, args.latency = 32, 0.05
    concurrency = args.concurrency or args.workers

    from flux_nb.client import FluxClient
    from flux_nb.sweeps import sweep

    with private_data_dir() as folder, serve("--latency", str(args.latency), "--workers", str(args.workers)) as server:
        client = FluxClient(endpoint=server.url)
        before = server.stats()
        rss_before = current_rss_mb()
        if args.tracemalloc:
            tracemalloc.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = sweep(
            "a lighthouse at dusk", seed=f"1-{args.cells}", image_size=args.size, client=client,
            concurrency=concurrency, max_cells=args.cells, progress=False, live=False,
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else float("nan")
        if args.tracemalloc:
            tracemalloc.stop()
        rss_peak = peak_rss_mb()
        after = server.stats()

        start = time.perf_counter()
        again = sweep(
            "a lighthouse at dusk", seed=f"1-{args.cells}", image_size=args.size, client=client,
            concurrency=concurrency, max_cells=args.cells, progress=False, live=False,
        )
        cached_wall = time.perf_counter() - start
        resubmits = server.stats()["jobs"]["submitted"] - after["jobs"]["submitted"]
        inline_kb = len(result._repr_mimebundle_()["text/html"]) / 1024
        on_disk_mb = sum(f.stat().st_size for f in (folder / "images").rglob("*") if f.is_file()) / 2**20
        client.close()

    ok = sum(c.ok for c in result.cells)
    ideal = math.ceil(args.cells / min(args.workers, concurrency)) * args.latency
    rows = [
        ["cells finished", f"{ok} / {args.cells}"],
        ["jobs submitted", after["jobs"]["submitted"] - before["jobs"]["submitted"]],
        ["wall time, s", wall],
        ["server-bound ideal, s", ideal],
        ["wall / ideal", f"{wall / ideal:.2f}x" if ideal else "-"],
        ["cells per second", args.cells / wall],
        ["client CPU, s (all threads)", cpu],
        ["client CPU per cell, ms", 1000 * cpu / args.cells],
        ["RSS before, MiB", rss_before],
        ["peak RSS, MiB", rss_peak],
        ["Python allocations peak (tracemalloc), MiB", traced_peak],
        ["images on disk, MiB", on_disk_mb],
        ["re-run from the cache, s", cached_wall],
        ["re-run submits", resubmits],
        ["cells cached on re-run", sum(c.status == "cached" for c in again.cells)],
        ["inline display (HTML), KiB", inline_kb],
    ]
    report(
        f"sweep scale: {args.cells} cells, flux-nb serve --latency {args.latency} --workers {args.workers}, "
        f"concurrency {concurrency}, {args.size}",
        ["metric", "value"],
        rows,
        notes=[
            "ideal = ceil(cells / workers) x latency: the server's own limit with zero client overhead",
            "the server runs in its own process; peak RSS is the client process only",
        ],
        json_out=args.json,
    )


if __name__ == "__main__":
    main()
