"""Requests per job and completion latency: flux-nb vs the official fal client.

One single-image job at a time against a local server (``--latency 0.2 --workers 1``) that stamps
the moment each job is COMPLETED (see ``_recording_server.py``). For every job we take

- the HTTP requests the server received for it (from ``/stats``: submit, status polls, stream,
  result, image files), and
- the completion delay: from the server marking the job COMPLETED to the client holding its
  images. flux-nb: ``FluxClient.generate`` has returned (images downloaded, checked, saved to the
  local store). fal_client: ``subscribe`` has returned (it polls status every 0.1 s) and the image
  has been downloaded with httpx, as a user must do to have it; the delay until ``subscribe``
  returns (URLs only) is shown too.

    python bench/requests_per_job.py            # 30 jobs each, 1024x768
    python bench/requests_per_job.py --quick    # 3 jobs each (smoke test)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

import _common as C
from _recording_server import read_finish_times

TOKEN = "bench-token"
PROMPT = "a glass teapot on a wooden table, soft window light"


def run_fluxnb(url: str, n: int, size: str, seed0: int, log: str) -> tuple[list[float], dict[str, int]]:
    from flux_nb.client import FluxClient

    client = FluxClient(url, key=TOKEN)
    done: dict[str, float] = {}
    try:
        client.generate(PROMPT, seed=seed0 - 1, cache=False, image_size=size)  # warm-up (connection, imports)
        before = dict(client.aio.counters)
        for i in range(n):
            result = client.generate(PROMPT, seed=seed0 + i, cache=False, image_size=size)
            done[result.request_id] = time.monotonic()
            assert result.images[0].data
        counters = {k: v - before.get(k, 0) for k, v in client.aio.counters.items()}
    finally:
        client.close()
    return _delays(done, log), counters


def run_fal(url: str, n: int, size: str, seed0: int, log: str) -> tuple[list[float], list[float]]:
    fal_client = C.point_fal_client_at(url)
    client = fal_client.SyncClient(key=TOKEN)
    with httpx.Client() as http:

        def one(seed: int) -> tuple[str, float, float]:
            handle = client.submit(C.APP, {"prompt": PROMPT, "seed": seed, "image_size": size})
            output = handle.get()  # what subscribe() does: poll status every 0.1 s, then fetch
            returned = time.monotonic()
            for image in output["images"]:
                response = http.get(image["url"])
                assert response.status_code == 200 and response.content
            return handle.request_id, returned, time.monotonic()

        one(seed0 - 1)  # warm-up
        returned: dict[str, float] = {}
        holding: dict[str, float] = {}
        for i in range(n):
            request_id, t_returned, t_holding = one(seed0 + i)
            returned[request_id], holding[request_id] = t_returned, t_holding
    client._client.close()
    return _delays(holding, log), _delays(returned, log)


def _delays(client_times: dict[str, float], log: str) -> list[float]:
    finished = read_finish_times(log)
    missing = set(client_times) - set(finished)
    assert not missing, f"no finish time recorded for {len(missing)} job(s)"
    return [client_times[r] - finished[r] for r in client_times]


def main(argv: list[str] | None = None) -> int:
    p = C.parser(__doc__)
    p.add_argument("-n", "--jobs", type=int, default=30)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--size", default="landscape_4_3")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.latency, args.size = 3, 0.05, "square"

    rows = []
    with C.private_data_dir(), tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "finish.log")
        server_args = ("--latency", str(args.latency), "--workers", "1", "--token", TOKEN)
        with C.serve(*server_args, module="_recording_server", env={"FLUX_NB_BENCH_FINISH_LOG": log}) as server:
            before = server.stats()
            flux_delays, counters = run_fluxnb(server.url, args.jobs, args.size, 100, log)
            middle = server.stats()
            fal_holding, fal_returned = run_fal(server.url, args.jobs, args.size, 10_000, log)
            after = server.stats()
        flux_req = C.stats_delta(before, middle)
        fal_req = C.stats_delta(middle, after)

    def per_job(delta: dict[str, int]) -> str:
        jobs = delta["jobs"] or 1
        parts = ", ".join(f"{k} {v / jobs:.1f}" for k, v in delta.items() if v and k not in {"jobs", "health"})
        return f"{C.job_requests(delta) / jobs:.1f} ({parts})"

    flux_med = C.median(flux_delays)
    ms = lambda xs, q: 1000 * C.percentile(xs, q)  # noqa: E731
    rows.append(["flux-nb FluxClient.generate (images held and saved)", per_job(flux_req), ms(flux_delays, 0.5), ms(flux_delays, 0.95), "1.00x"])
    rows.append(["fal_client subscribe + httpx image download", per_job(fal_req), ms(fal_holding, 0.5), ms(fal_holding, 0.95), C.ratio(C.median(fal_holding), flux_med)])
    rows.append(["fal_client subscribe returns (URLs only)", "(same jobs)", ms(fal_returned, 0.5), ms(fal_returned, 0.95), C.ratio(C.median(fal_returned), flux_med)])
    C.report(
        f"Requests per job and completion delay: {args.jobs} single-image jobs, {args.size}, serve --latency {args.latency:g} --workers 1",
        ["client", "HTTP requests per job (by kind)", "median delay ms", "p95 delay ms", "delay vs flux-nb"],
        rows,
        [
            "delay = client holds the images - server marked the job COMPLETED (same CLOCK_MONOTONIC); one job at a time, warm connection",
            f"flux-nb's own counters for the timed jobs: {dict(sorted(counters.items()))}",
            "requests per job include the warm-up job of each client",
        ],
        json_out=args.json,
        extra={"fluxnb_delays": flux_delays, "fal_holding": fal_holding, "fal_returned": fal_returned},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
