"""Sweep wall time: flux-nb vs the official fal client, against the same local server.

64 requests (distinct seeds, one image each) against ``flux-nb serve --latency 0.5 --workers 8``,
so the server-bound ideal is 64 / 8 x 0.5 s = 4 s. Contenders, each with its own fresh client and one
untimed warm-up request:

- flux-nb ``sweep()`` over a 64-cell seed axis, cache off, with its default concurrency and with
  every cell in flight at once;
- flux-nb ``AsyncFluxClient`` with ``asyncio.gather`` of ``generate`` (what sweep builds on);
- fal_client's ``AsyncClient`` with ``asyncio.gather`` of ``subscribe``, as its docs recommend for
  many requests: once as is (it returns image URLs only) and once also downloading each image with
  one shared httpx client, which is what flux-nb does before it returns (flux-nb also checks every
  image and keeps it in memory);
- the plain loop of fal_client's ``subscribe`` many users write: it runs one job at a time, so it
  times 16 requests and scales by 4 (said in the table).

    python bench/sweep_vs_fal_client.py                 # 64 requests, 3 repeats, 1024x768
    python bench/sweep_vs_fal_client.py --quick         # 8 requests, latency 0.05 s (smoke test)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import httpx

import _common as C

TOKEN = "bench-token"
PROMPT = "a lighthouse on a cliff at dusk, volumetric light"


def _fields(size: str) -> dict[str, Any]:
    return {"image_size": size, "num_images": 1}


# -- flux-nb ------------------------------------------------------------------------------------


def run_fluxnb_gather(url: str, n: int, size: str, seed0: int) -> float:
    from flux_nb.client import AsyncFluxClient

    async def main() -> float:
        async with AsyncFluxClient(url, key=TOKEN) as client:
            await client.generate(PROMPT, seed=seed0 - 1, cache=False, **_fields(size))  # warm-up
            start = time.perf_counter()
            results = await asyncio.gather(*(client.generate(PROMPT, seed=seed0 + i, cache=False, **_fields(size)) for i in range(n)))
            elapsed = time.perf_counter() - start
        assert len(results) == n and all(r.images[0].data for r in results)
        return elapsed

    return asyncio.run(main())


def sweep_available() -> bool:
    try:
        from flux_nb.sweeps import sweep  # noqa: F401
    except ImportError:
        return False
    return True


def run_fluxnb_sweep(url: str, n: int, size: str, seed0: int, concurrency: int | None = None) -> float:
    from flux_nb.client import FluxClient
    from flux_nb.sweeps import sweep

    client = FluxClient(url, key=TOKEN)
    try:
        client.generate(PROMPT, seed=seed0 - 1, cache=False, **_fields(size))  # warm-up
        start = time.perf_counter()
        result = sweep(
            PROMPT, cache=False, client=client, progress=False, live=False, concurrency=concurrency,
            max_cells=None, seed=list(range(seed0, seed0 + n)), **_fields(size),
        )
        elapsed = time.perf_counter() - start
        cells = list(result.cells)
        assert len(cells) == n, f"sweep made {len(cells)} cells, wanted {n}"
    finally:
        client.close()
    return elapsed


# -- fal_client ---------------------------------------------------------------------------------


def run_fal_async(url: str, n: int, size: str, seed0: int, *, download: bool) -> float:
    fal_client = C.point_fal_client_at(url)

    async def main() -> float:
        client = fal_client.AsyncClient(key=TOKEN)
        async with httpx.AsyncClient() as http:

            async def one(seed: int) -> Any:
                output = await client.subscribe(C.APP, {"prompt": PROMPT, "seed": seed, **_fields(size)})
                if download:
                    images = await asyncio.gather(*(http.get(image["url"]) for image in output["images"]))
                    assert all(r.status_code == 200 and r.content for r in images)
                return output

            await one(seed0 - 1)  # warm-up
            start = time.perf_counter()
            outputs = await asyncio.gather(*(one(seed0 + i) for i in range(n)))
            elapsed = time.perf_counter() - start
        assert len(outputs) == n
        await (await client._client).aclose()
        return elapsed

    return asyncio.run(main())


def run_fal_loop(url: str, n: int, size: str, seed0: int) -> float:
    fal_client = C.point_fal_client_at(url)
    client = fal_client.SyncClient(key=TOKEN)
    client.subscribe(C.APP, {"prompt": PROMPT, "seed": seed0 - 1, **_fields(size)})  # warm-up
    start = time.perf_counter()
    for i in range(n):
        output = client.subscribe(C.APP, {"prompt": PROMPT, "seed": seed0 + i, **_fields(size)})
        assert output["images"]
    elapsed = time.perf_counter() - start
    client._client.close()
    return elapsed


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__)
    p.add_argument("-n", "--requests", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--size", default="landscape_4_3", help="image size preset (default landscape_4_3 = 1024x768)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loop-requests", type=int, default=16, help="requests timed for the sequential loop (then scaled)")
    p.add_argument("--only", default=None, help="comma-separated contenders to run (sweep,sweep-all,gather,fal,fal+dl,loop)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.latency, args.repeats, args.loop_requests, args.size = 8, 0.05, 1, 2, "square"

    n = args.requests
    ideal = n / args.workers * args.latency
    loop_n = min(args.loop_requests, n)
    contenders: list[tuple[str, str, Callable[[str, int], float], int]] = []
    if sweep_available():
        from flux_nb.sweeps import DEFAULT_CONCURRENCY

        contenders.append(("sweep", f"flux-nb sweep(cache=False), default concurrency {DEFAULT_CONCURRENCY}", lambda url, s: run_fluxnb_sweep(url, n, args.size, s), n))
        contenders.append(("sweep-all", f"flux-nb sweep(cache=False, concurrency={n})", lambda url, s: run_fluxnb_sweep(url, n, args.size, s, n), n))
    contenders += [
        ("gather", "flux-nb AsyncFluxClient + gather(generate)", lambda url, s: run_fluxnb_gather(url, n, args.size, s), n),
        ("fal", "fal_client AsyncClient + gather(subscribe), URLs only", lambda url, s: run_fal_async(url, n, args.size, s, download=False), n),
        ("fal+dl", "fal_client AsyncClient + gather(subscribe) + download", lambda url, s: run_fal_async(url, n, args.size, s, download=True), n),
        ("loop", f"fal_client subscribe loop ({loop_n} timed, x{n / loop_n:g})", lambda url, s: run_fal_loop(url, loop_n, args.size, s), loop_n),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        contenders = [c for c in contenders if c[0] in wanted]

    times: dict[str, list[float]] = {key: [] for key, *_ in contenders}
    requests: dict[str, float] = {}
    with C.private_data_dir(), C.serve("--latency", str(args.latency), "--workers", str(args.workers), "--token", TOKEN) as server:
        seed = 1000
        for _ in range(args.repeats):
            for key, _label, run, count in contenders:
                before = server.stats()
                seconds = run(server.url, seed)
                delta = C.stats_delta(before, server.stats())
                seed += count + 1
                times[key].append(seconds * n / count)
                requests[key] = C.job_requests(delta) / (delta["jobs"] or 1)

    fal_best = min((C.median(times[k]) for k in ("fal", "fal+dl") if times.get(k)), default=float("nan"))
    rows = []
    for key, label, _run, _count in contenders:
        med = C.median(times[key])
        rows.append([label, med, min(times[key]), C.ratio(med, ideal), C.ratio(med, fal_best), f"{requests[key]:.1f}"])
    C.report(
        f"Sweep wall time: {n} requests, {args.size}, serve --latency {args.latency:g} --workers {args.workers}",
        ["contender", "median s", "best s", "vs ideal", "vs fal_client best", "requests/job"],
        rows,
        [
            f"ideal (server-bound) = {n}/{args.workers} x {args.latency:g} s = {ideal:.2f} s; median of {args.repeats} run(s), each after one untimed warm-up request",
            "'fal_client best' = the faster of the two gather rows; requests/job counts every HTTP request the server got (warm-up included), per job",
        ],
        json_out=args.json,
        extra={"ideal": ideal, "times": times},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
