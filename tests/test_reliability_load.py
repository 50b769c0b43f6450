"""The local server under load, as a real process: 16 clients x 50 requests, then a clean shutdown.

``flux-nb serve`` runs as a subprocess (so its memory is its own: peak RSS is read from
``/proc/PID/status``). Sixteen independent clients (one ``AsyncFluxClient`` each, with its own
connection pool) each generate 50 images one after another, all at once. Every status each client
sees is checked: queue positions are never negative and never go up while a job waits.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from flux_nb import _loop
from flux_nb.client import AsyncFluxClient
from flux_nb.protocol import JobStatus
from servers import report, server_stderr, start_cli_server, stop_process

CLIENTS = 16
PER_CLIENT = 50
SIZE = {"width": 64, "height": 64}


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MB."""
    figures = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0]) / 1024
    return figures


def check_positions(statuses: list[JobStatus]) -> None:
    waiting = [s.queue_position for s in statuses if s.status == "IN_QUEUE"]
    assert all(p is not None and p >= 0 for p in waiting), waiting
    assert all(a >= b for a, b in zip(waiting, waiting[1:])), f"queue position went up: {waiting}"
    # once running or done, a job never goes back to the queue
    phases = [s.status for s in statuses]
    first_out = next((i for i, p in enumerate(phases) if p != "IN_QUEUE"), len(phases))
    assert "IN_QUEUE" not in phases[first_out:], phases


@pytest.mark.slow
def test_16_clients_x_50_requests_lose_nothing(data_dir):
    proc, url = start_cli_server("--workers", "4", "--latency", "0.005")
    try:
        samples: list[float] = []

        async def one_client(index: int) -> list[tuple[str, int, list[JobStatus]]]:
            done = []
            async with AsyncFluxClient(endpoint=url, store=False, timeout=120) as client:
                for k in range(PER_CLIENT):
                    seen: list[JobStatus] = []
                    seed = index * 1000 + k
                    res = await client.generate("load", seed=seed, image_size=SIZE, on_status=seen.append)
                    assert res.seed == seed and res.images[0].width == 64
                    assert res.images[0].to_pil().size == (64, 64)
                    done.append((res.request_id, res.seed, seen))
                    if index == 0 and k % 10 == 9:
                        samples.append(memory_mb(proc.pid)["VmRSS"])
            return done

        async def everyone():
            return await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))

        started = time.monotonic()
        results = _loop.run_sync(everyone())
        elapsed = time.monotonic() - started
        memory = memory_mb(proc.pid)
        stats = httpx.get(url + "/stats").json()
        health = httpx.get(url + "/health").json()
    finally:
        stop_started = time.monotonic()
        stop_process(proc, signal.SIGINT)
        shutdown_s = time.monotonic() - stop_started

    flat = [item for per_client in results for item in per_client]
    assert len(flat) == CLIENTS * PER_CLIENT
    assert len({rid for rid, _, _ in flat}) == CLIENTS * PER_CLIENT  # every request its own job
    assert sorted(seed for _, seed, _ in flat) == sorted(i * 1000 + k for i in range(CLIENTS) for k in range(PER_CLIENT))
    queued_somewhere = 0
    for _, _, seen in flat:
        assert seen and seen[-1].done and not seen[-1].error
        check_positions(seen)
        queued_somewhere += any(s.status == "IN_QUEUE" and (s.queue_position or 0) > 0 for s in seen)
    assert queued_somewhere > 0, "the load never made a queue: the position check proved nothing"
    assert stats["jobs"] == {"submitted": 800, "completed": 800, "cancelled": 0, "failed": 0}
    assert stats["duplicate_submissions"] == 0
    assert health["queue_length"] == 0 and health["running"] == 0
    # memory is stable: the second half of the run adds little to what the first half needed
    half = len(samples) // 2
    growth = max(samples[half:]) - max(samples[:half])
    assert growth < 50, f"server RSS grew {growth:.0f} MB in the second half: {samples}"
    assert proc.returncode in (0, 130)
    report(
        "load: 16 clients x 50 requests",
        requests_sent=sum(stats["requests"][k] for k in ("submit", "status", "stream", "result", "cancel", "file")),
        faults_injected=0,
        results_received=len(flat),
        jobs_submitted=stats["jobs"]["submitted"],
        duplicates=stats["duplicate_submissions"],
        jobs_that_waited_in_queue=queued_somewhere,
        server_peak_rss_mb=round(memory["VmHWM"], 1),
        server_rss_samples_mb=[round(s, 1) for s in samples],
        seconds=round(elapsed, 1),
        shutdown_seconds=round(shutdown_s, 2),
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_with_jobs_in_flight_ends_every_job(sig, data_dir):
    proc, url = start_cli_server("--workers", "2", "--latency", "1.0")
    outcomes: list = []
    try:
        async def follow_all():
            async with AsyncFluxClient(endpoint=url, store=False, timeout=60, request_timeout=5) as client:
                tasks = [asyncio.ensure_future(client.generate("shutdown", seed=i, image_size=SIZE)) for i in range(6)]
                # poll without blocking flux-nb's loop, and give up after a deadline
                async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(30):
                    while (await http.get(url + "/stats")).json()["jobs"]["submitted"] < 6:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # two running, four queued
                proc.send_signal(sig)
                return await asyncio.gather(*tasks, return_exceptions=True)

        started = time.monotonic()
        outcomes = _loop.run_sync(follow_all())
        ended_s = time.monotonic() - started
        proc.wait(20)  # the one signal is enough: a second one would be a forced exit
    finally:
        stop_process(proc, signal.SIGKILL, check=False)  # a no-op once it has exited
    # uvicorn ends a SIGTERM by re-raising it once shut down; Ctrl-C exits with 130
    assert proc.returncode in (0, 130, -signal.SIGTERM)
    stderr = server_stderr(proc)
    assert "Traceback" not in stderr, stderr[-6000:]
    kinds = [type(o).__name__ for o in outcomes]
    # Every job ended and its client was told: the shutdown cancelled the running and queued jobs,
    # and each status stream sent that final status before the server closed.
    assert kinds == ["FluxCancelledError"] * 6, kinds
    assert ended_s < 30
