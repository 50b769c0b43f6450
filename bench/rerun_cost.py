"""Re-run cost: a warm-cache re-run of a 64-cell sweep (8 guidance values x 8 seeds, 1024x768).

The first run generates every cell against ``flux-nb serve --latency 0`` and saves it in the local
store (a private temporary data folder). Then the same sweep runs again, in the same process (a
notebook cell re-run) and in a fresh process (after a kernel restart; import time not counted).
For each: wall time of the ``sweep()`` call, HTTP requests the server received (``/stats``) and
requests the client sent (its counters).

    python bench/rerun_cost.py            # 64 cells
    python bench/rerun_cost.py --quick    # 4 cells, small images (smoke test)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common as C

TOKEN = "bench-token"
PROMPT = "a paper boat on a puddle, macro photo"

# The fresh-process re-run: same sweep, timed inside that process after its imports.
FRESH = """\
import json, sys, time
from flux_nb.client import FluxClient
from flux_nb.sweeps import sweep
args = json.loads(sys.argv[1])
client = FluxClient(args["url"], key=args["token"])
start = time.perf_counter()
result = sweep(args["prompt"], client=client, progress=False, live=False, **args["axes"])
elapsed = time.perf_counter() - start
assert all(c.status == "cached" for c in result.cells), [c.status for c in result.cells]
print(json.dumps({"seconds": elapsed, "counters": client.aio.counters}))
client.close()
"""


def run_sweep(url: str, axes: dict) -> tuple[float, dict[str, int], list[str]]:
    from flux_nb.client import FluxClient
    from flux_nb.sweeps import sweep

    client = FluxClient(url, key=TOKEN)
    try:
        start = time.perf_counter()
        result = sweep(PROMPT, client=client, progress=False, live=False, **axes)
        elapsed = time.perf_counter() - start
        statuses = [c.status for c in result.cells]
        return elapsed, dict(client.aio.counters), statuses
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--size", default="landscape_4_3")
    args = p.parse_args(argv)
    axes = {"guidance": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0], "seed": list(range(1, 9)), "image_size": args.size}
    if args.quick:
        axes = {"guidance": [2.0, 4.0], "seed": [1, 2], "image_size": "64x64"}
    cells = len(axes["guidance"]) * len(axes["seed"])

    rows = []
    with C.private_data_dir(), C.serve("--latency", "0", "--workers", "8", "--token", TOKEN) as server:
        before = server.stats()
        first, counters, statuses = run_sweep(server.url, axes)
        assert statuses.count("done") == cells, statuses
        mid = server.stats()
        rows.append(["first run (generates every cell)", first, C.job_requests(C.stats_delta(before, mid)), sum(counters.values()), "-"])

        again, counters, statuses = run_sweep(server.url, axes)
        assert statuses.count("cached") == cells, statuses
        after = server.stats()
        rows.append(["re-run, same process", again, C.job_requests(C.stats_delta(mid, after)), sum(counters.values()), C.ratio(first, again)])

        payload = json.dumps({"url": server.url, "token": TOKEN, "prompt": PROMPT, "axes": axes})
        out = subprocess.run([sys.executable, "-c", FRESH, payload], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"fresh-process re-run failed: {out.stderr[-2000:]}")
        fresh = json.loads(out.stdout.strip().splitlines()[-1])
        final = server.stats()
        rows.append(["re-run, fresh process (kernel restart)", fresh["seconds"], C.job_requests(C.stats_delta(after, final)),
                     sum(fresh["counters"].values()), C.ratio(first, fresh["seconds"])])

    C.report(
        f"Re-run cost: a {cells}-cell sweep ({axes['image_size']}) against serve --latency 0 --workers 8",
        ["run", "wall s", "requests server got", "requests client sent", "speed-up"],
        rows,
        ["cache hits are read back from the store (SQLite index + image files) and thumbnailed for the grid"],
        json_out=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
