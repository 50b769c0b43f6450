"""Slow, stalled and trickling servers: the call ends within its deadline, a late submit is never re-sent.

The bounds here are correctness bounds (a notebook cell must not hang), not speed measurements:
each call must return within its configured deadline plus a fixed slack for the clean-up
(cancelling the job on the server, itself bounded by ``request_timeout``).
"""

from __future__ import annotations

import time

import httpx
import pytest

from flux_nb.client import FluxClient
from flux_nb.errors import FluxAmbiguousSubmitError, FluxTimeoutError
from flux_nb.params import FluxRequest
from flux_nb.protocol import RetryPolicy
from hostile import APP, HostileServer, late, silent, trickle

SLACK = 3.0  # seconds allowed beyond the deadline: the cancel call (<= request_timeout) and thread hops
RESULT = f"/{APP}/requests/*"
STREAM = f"/{APP}/requests/*/status/stream"


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


def timed_failure(client: FluxClient, expected: type[Exception]) -> tuple[Exception, float]:
    started = time.monotonic()
    try:
        with pytest.raises(expected) as info:
            client.generate("slow", seed=1, image_size="square")
    finally:
        elapsed = time.monotonic() - started
        client.close()
    return info.value, elapsed


def submit_handler(server: HostileServer):
    """The hostile server's own submit (creates the job), to wrap in ``late``."""
    return server._match("POST", f"/{APP}")


def test_submit_answered_late_is_ambiguous_and_creates_no_second_job(hostile):
    hostile.route("POST", f"/{APP}", late(submit_handler(hostile), seconds=3))
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=0.5, timeout=10)
    error, elapsed = timed_failure(client, FluxAmbiguousSubmitError)
    assert "may exist" in str(error)
    assert elapsed < 0.5 * 4 + SLACK  # the submit's own deadline, never the 10 s generation deadline
    time.sleep(0.2)
    assert hostile.jobs_created == 1 and len(hostile.seen("POST")) == 1


def test_submit_answered_late_by_the_real_server_creates_one_job(live_server):
    """The real local server behind a slow proxy: the job exists, the client says so, sends it once."""
    server = live_server()
    with HostileServer() as proxy:

        async def slow_forward(req, _server, _writer):
            from hostile import Reply

            async with httpx.AsyncClient() as http:
                answer = await http.post(server.url + req.path, content=req.body, headers={"content-type": "application/json"})
            return Reply(answer.status_code, answer.content, {"Content-Type": "application/json"})

        proxy.route("POST", f"/{APP}", late(slow_forward, seconds=2))
        client = FluxClient(endpoint=proxy.url, store=False, request_timeout=0.4, timeout=10)
        timed_failure(client, FluxAmbiguousSubmitError)
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/stats").json()["jobs"]["submitted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = httpx.get(server.url + "/stats").json()
    assert stats["jobs"]["submitted"] == 1 and stats["requests"]["submit"] == 1


def test_server_that_accepts_and_never_answers_the_submit(hostile):
    hostile.route("POST", f"/{APP}", silent())
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=1.0, timeout=3)
    _, elapsed = timed_failure(client, FluxAmbiguousSubmitError)
    assert elapsed < 1.0 + SLACK
    assert len(hostile.seen("POST")) == 1


def test_submit_answered_one_byte_a_second(hostile):
    hostile.route("POST", f"/{APP}", trickle(interval=1.0))
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=1.5, timeout=3)
    _, elapsed = timed_failure(client, FluxAmbiguousSubmitError)
    assert elapsed < 1.5 + SLACK
    assert len(hostile.seen("POST")) == 1


@pytest.mark.parametrize("stall", ["silent", "trickle"])
def test_stalled_status_stream_times_out_and_cancels_the_job(hostile, stall):
    hostile.route("GET", STREAM, silent() if stall == "silent" else trickle(b"data: " + b" " * 10_000, interval=0.5))
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=0.5, timeout=2.0)
    error, elapsed = timed_failure(client, FluxTimeoutError)
    assert error.request_id == hostile.request_id
    assert elapsed < 2.0 + SLACK
    assert hostile.cancels == 1


def test_stalled_status_polling_times_out_and_cancels_the_job(hostile):
    """A server without the stream: polling the status, which then stalls."""
    from hostile import raw

    hostile.route("GET", STREAM, raw(b'{"detail": "no stream"}', status=404))
    hostile.route("GET", f"/{APP}/requests/*/status", silent())
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=0.5, timeout=2.0,
                        retry=RetryPolicy(attempts=50, base=0.05, cap=0.1))
    _, elapsed = timed_failure(client, FluxTimeoutError)
    assert elapsed < 2.0 + SLACK
    assert hostile.cancels == 1


@pytest.mark.parametrize("where", [RESULT, "/files/*"], ids=["result", "image"])
@pytest.mark.parametrize("stall", ["silent", "trickle"])
def test_stalled_result_or_image_times_out_within_the_generation_deadline(hostile, where, stall):
    hostile.route("GET", where, silent() if stall == "silent" else trickle(interval=0.5))
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=1.0, timeout=2.0)
    _, elapsed = timed_failure(client, FluxTimeoutError)
    assert elapsed < 2.0 + SLACK
    assert hostile.cancels == 1


def test_status_call_on_a_stalled_server_is_bounded(hostile):
    """A single status call (no generation deadline) is bounded by request_timeout and the retries."""
    hostile.route("GET", f"/{APP}/requests/*/status", silent())
    client = FluxClient(endpoint=hostile.url, store=False, request_timeout=0.3,
                        retry=RetryPolicy(attempts=3, base=0.01, cap=0.02))
    handle = client.submit(FluxRequest("x", image_size="square"))
    started = time.monotonic()
    with pytest.raises(FluxTimeoutError):
        client.status(handle)
    assert time.monotonic() - started < 0.3 * 4 + SLACK
    client.close()
