"""The client against the real local server: over loopback HTTP and in-process (embedded)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

import flux_nb
from flux_nb import _loop
from flux_nb.client import AsyncFluxClient, FluxClient
from flux_nb.errors import (
    FluxAmbiguousSubmitError,
    FluxAuthError,
    FluxCancelledError,
    FluxConnectionError,
    FluxInputError,
    FluxTimeoutError,
    FluxValidationError,
)
from flux_nb.params import FluxRequest


def stats(server) -> dict:
    return httpx.get(f"{server.url}/stats").json()


@pytest.fixture
def make_client():
    """``make_client(**options)``: a :class:`FluxClient` (``store=False`` unless given) that is
    closed when the test ends, however it ends."""
    made: list[FluxClient] = []

    def make(**options) -> FluxClient:
        options.setdefault("store", False)
        client = FluxClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_generate_over_loopback_returns_typed_fetched_images(live_server, make_client):
    server = live_server()
    client = make_client(endpoint=server.url)
    seen = []
    res = client.generate("a red fox in snow", seed=7, num_images=2, image_size="square", on_status=seen.append)
    assert res.seed == 7 and res.prompt == "a red fox in snow" and res.request_id
    assert res.request.seed == 7 and len(res.images) == 2
    for image in res.images:
        assert (image.width, image.height) == (512, 512) and image.content_type == "image/jpeg"
        assert image.to_pil().size == (512, 512) and image.data[:2] == b"\xff\xd8"
    assert res.has_nsfw_concepts == [False, False]
    assert seen and seen[-1].done and any(s.logs for s in seen)
    # one submit, one stream, one result, and one download per image: no polling
    counts = stats(server)["requests"]
    assert (counts["submit"], counts["stream"], counts["result"], counts["status"]) == (1, 1, 1, 0)
    assert counts["file"] == 2


def test_embedded_backend_matches_loopback_byte_for_byte(live_server, make_client):
    server = live_server()
    over_http = make_client(endpoint=server.url).generate("a lighthouse", seed=3, image_size="square")
    embedded = make_client()
    assert embedded.backend.kind == "embedded"
    in_process = embedded.generate("a lighthouse", seed=3, image_size="square")
    assert in_process.images[0].data == over_http.images[0].data


def test_module_level_generate_uses_the_embedded_default_and_persists(data_dir):
    res = flux_nb.generate("a quiet harbour", seed=11, image_size="square", output_format="png")
    assert res.backend == "embedded" and res.images[0].content_type == "image/png"
    path = res.images[0].path
    assert path is not None and path.exists() and str(path).startswith(str(data_dir))


def test_sync_api_works_inside_a_running_event_loop(live_server, make_client):
    """What Jupyter does: a loop already runs in the calling thread."""
    server = live_server()
    client = make_client(endpoint=server.url)

    async def cell():
        return client.generate("inside a loop", seed=1, image_size="square")

    assert asyncio.run(cell()).seed == 1


def test_async_api_and_parity_with_sync(live_server, make_client):
    server = live_server()

    async def main():
        async with AsyncFluxClient(endpoint=server.url, store=False) as client:
            return await asyncio.gather(*(client.generate("twin", seed=s, image_size="square") for s in (1, 2)))

    async_results = asyncio.run(main())
    sync_results = [make_client(endpoint=server.url).generate("twin", seed=s, image_size="square") for s in (1, 2)]
    assert [r.images[0].data for r in async_results] == [r.images[0].data for r in sync_results]
    assert async_results[0].images[0].data != async_results[1].images[0].data


def test_agenerate_from_another_loop(data_dir):
    async def main():
        return await flux_nb.client.agenerate("top level await", seed=5, image_size="square")

    assert asyncio.run(main()).seed == 5


def test_validation_happens_before_anything_is_sent(live_server, make_client):
    server = live_server()
    with pytest.raises(FluxValidationError, match="num_images"):
        make_client(endpoint=server.url).generate("x", num_images=9)
    assert stats(server)["requests"]["submit"] == 0


def test_server_side_422_is_an_input_error(live_server, make_client):
    server = live_server(max_pixels=512 * 512)
    with pytest.raises(FluxInputError) as info:
        make_client(endpoint=server.url).generate("x", image_size="square_hd")
    assert "image_size" in str(info.value)


def test_cancel_by_task_cancellation_cancels_on_the_server(live_server, make_client):
    server = live_server(latency=5.0, workers=1)
    client = make_client(endpoint=server.url)
    future = _loop.submit(client.aio.generate("slow", seed=1, image_size="square"))
    deadline = time.monotonic() + 10
    while stats(server)["jobs"]["submitted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    future.cancel()
    deadline = time.monotonic() + 20
    while stats(server)["jobs"]["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(server)["jobs"]["cancelled"] == 1, stats(server)
    assert stats(server)["requests"]["cancel"] >= 1


def test_explicit_cancel_reports_states(live_server, make_client):
    server = live_server(latency=5.0, workers=1)
    client = make_client(endpoint=server.url)
    handle = client.submit(FluxRequest("slow", image_size="square"))
    assert client.cancel(handle) == "CANCELLATION_REQUESTED"
    statuses = list(client.iter_status(handle))
    assert statuses[-1].done and statuses[-1].error_type == "request_cancelled"
    with pytest.raises(FluxCancelledError):
        client.fetch(handle, FluxRequest("slow", image_size="square"))


def test_retries_under_faults_make_no_duplicate_jobs(live_server, make_client):
    server = live_server(fail_rate=0.3, fault_seed=4, workers=4)
    client = make_client(endpoint=server.url)

    async def many():
        return await asyncio.gather(*(client.aio.generate("fault", seed=i, image_size="square") for i in range(12)))

    results = _loop.run_sync(many())
    assert sorted(r.seed for r in results) == list(range(12))
    s = stats(server)
    assert s["faults"]["total"] > 0
    assert s["jobs"]["submitted"] == 12 and s["duplicate_submissions"] == 0


class _FlakyTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport; injects what the server cannot produce on its own."""

    def __init__(self, mode: str):
        self.inner = httpx.AsyncHTTPTransport()
        self.mode = mode
        self.submits = 0

    async def handle_async_request(self, request):
        if request.method == "POST" and "/requests/" not in request.url.path and "storage" not in request.url.path:
            self.submits += 1
            if self.mode == "refused-once" and self.submits == 1:
                raise httpx.ConnectError("refused")
            if self.mode == "lost-answer":
                response = await self.inner.handle_async_request(request)  # the job IS created
                await response.aclose()
                raise httpx.ReadError("connection reset after sending")
        if self.mode == "slow-submit" and request.method == "POST":
            await asyncio.sleep(0.5)
        if self.mode == "no-stream" and request.url.path.endswith("/status/stream"):
            return httpx.Response(404, json={"detail": "no stream here"})
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def test_submit_that_never_connected_is_retried_once_safely(live_server, make_client):
    server = live_server()
    transport = _FlakyTransport("refused-once")
    res = make_client(endpoint=server.url, transport=transport).generate("x", seed=1, image_size="square")
    assert res.seed == 1 and transport.submits == 2
    assert stats(server)["jobs"]["submitted"] == 1


def test_submit_whose_answer_is_lost_is_ambiguous_and_not_resent(live_server, make_client):
    server = live_server()
    transport = _FlakyTransport("lost-answer")
    with pytest.raises(FluxAmbiguousSubmitError, match="may exist"):
        make_client(endpoint=server.url, transport=transport).generate("x", seed=1, image_size="square")
    assert transport.submits == 1
    assert stats(server)["jobs"]["submitted"] == 1


def test_falls_back_to_polling_without_a_stream(live_server, make_client):
    server = live_server(latency=0.3)
    transport = _FlakyTransport("no-stream")
    res = make_client(endpoint=server.url, transport=transport).generate("x", seed=1, image_size="square")
    assert res.seed == 1
    polls = stats(server)["requests"]["status"]
    assert 1 <= polls <= 10  # backoff, not a 0.1 s loop


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for c in conns:
        c.close()
    sock.close()


def test_a_server_that_never_answers_times_out(silent_server, make_client):
    client = make_client(endpoint=silent_server, request_timeout=0.5, timeout=2)
    with pytest.raises(FluxAmbiguousSubmitError):
        client.generate("x", seed=1)


def test_unreachable_server_is_a_connection_error(make_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from flux_nb.protocol import RetryPolicy

    client = make_client(endpoint=f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2, base=0.01))
    with pytest.raises(FluxConnectionError):
        client.generate("x", seed=1)


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(live_server, make_client):
    server = live_server(token="right-token")
    client = make_client(endpoint=server.url, key="sekrit-key-123")
    with pytest.raises(FluxAuthError) as info:
        client.generate("x", seed=1)
    for text in (str(info.value), repr(info.value), repr(client), repr(client.aio), repr(client.backend)):
        assert "sekrit-key-123" not in text
    ok = make_client(endpoint=server.url, key="right-token").generate("x", seed=1, image_size="square")
    assert ok.seed == 1


def test_local_lora_files_are_uploaded_once(live_server, tmp_path, make_client):
    server = live_server()
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"not really a lora, but the preview engine only hashes it")
    client = make_client(endpoint=server.url)
    a = client.generate("x", seed=1, image_size="square", loras=[{"path": str(lora), "scale": 0.8}])
    b = client.generate("x", seed=1, image_size="square", loras=[{"path": str(lora), "scale": 0.2}])
    assert a.request.loras[0].path == str(lora)  # the user's request is kept as written
    assert stats(server)["requests"]["upload"] == 1
    assert a.images[0].data != b.images[0].data  # the scale reached the engine


def test_sync_mode_data_uris(live_server, make_client):
    server = live_server()
    res = make_client(endpoint=server.url).generate("x", seed=2, image_size="square", sync_mode=True)
    assert res.images[0].url is None and res.images[0].to_pil().size == (512, 512)
    assert stats(server)["requests"]["file"] == 0


def test_overall_deadline_cancels_the_job(live_server, make_client):
    server = live_server(latency=5.0)
    client = make_client(endpoint=server.url, timeout=1.0)
    with pytest.raises(FluxTimeoutError):
        client.generate("x", seed=1, image_size="square")
    deadline = time.monotonic() + 5
    while stats(server)["jobs"]["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(server)["jobs"]["cancelled"] == 1


def test_cancel_while_the_submit_is_in_flight_still_cancels_the_job(live_server, make_client):
    server = live_server(latency=3.0)
    client = make_client(endpoint=server.url, transport=_FlakyTransport("slow-submit"))
    future = _loop.submit(client.aio.generate("x", seed=1, image_size="square"))
    time.sleep(0.1)  # the submit is still travelling
    future.cancel()
    deadline = time.monotonic() + 10
    while stats(server)["jobs"]["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    s = stats(server)
    assert s["jobs"]["submitted"] == 1 and s["jobs"]["cancelled"] == 1 and s["jobs"]["completed"] == 0


class _CrashingEngine:
    name = "crashing"
    max_concurrency = None

    def check(self, request):
        pass

    def generate(self, request, seed, ctx):
        raise RuntimeError("the model fell over")

    def close(self):
        pass


def test_a_failed_job_is_reported_at_once_not_retried(live_server, make_client):
    from flux_nb.errors import FluxJobFailedError

    server = live_server(engine=_CrashingEngine())
    with pytest.raises(FluxJobFailedError) as info:
        make_client(endpoint=server.url).generate("x", seed=1, image_size="square")
    assert info.value.request_id and info.value.error_type == "internal_server_error"
    assert stats(server)["requests"]["result"] == 1  # the replayed 500 is the model's answer


def test_fetch_refuses_urls_of_another_server(live_server, make_client):
    from flux_nb.errors import FluxConfigError

    server = live_server()
    client = make_client(endpoint=server.url)
    foreign = {
        "request_id": "r1",
        "status_url": "https://elsewhere.example/fal-ai/flux-lora/requests/r1/status",
        "response_url": "https://elsewhere.example/fal-ai/flux-lora/requests/r1",
        "cancel_url": "https://elsewhere.example/fal-ai/flux-lora/requests/r1/cancel",
    }
    with pytest.raises(FluxConfigError, match="another server"):
        client.fetch(foreign, FluxRequest("x"))


class _ScriptedTransport(httpx.AsyncBaseTransport):
    """A real server behind, with one kind of answer replaced (what the server cannot produce)."""

    def __init__(self, mode: str, key: str = ""):
        self.inner = httpx.AsyncHTTPTransport()
        self.mode, self.key = mode, key
        self.calls: dict[str, int] = {}

    async def handle_async_request(self, request):
        path = request.url.path
        kind = "stream" if path.endswith("/status/stream") else "submit" if request.method == "POST" and "/requests/" not in path and "storage" not in path and "files" not in path else "other"
        self.calls[kind] = self.calls.get(kind, 0) + 1
        if self.mode == "short-stream" and kind == "stream":
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b": nothing\n\n")
        if self.mode == "gateway-502" and kind == "submit":
            return httpx.Response(502, json={"detail": "bad gateway"})
        if self.mode == "busy-503-once" and kind == "submit" and self.calls[kind] == 1:
            return httpx.Response(503, json={"detail": "busy"})
        if self.mode == "echo-key" and kind == "submit":
            return httpx.Response(401, json={"detail": f"bad Authorization header: Key {self.key}"})
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def test_streams_that_end_early_do_not_become_a_request_storm(live_server, make_client):
    server = live_server(latency=1.5)
    transport = _ScriptedTransport("short-stream")
    res = make_client(endpoint=server.url, transport=transport).generate("x", seed=1, image_size="square")
    assert res.seed == 1
    assert transport.calls["stream"] <= 3 and stats(server)["requests"]["status"] <= 15


def test_a_submit_is_resent_only_when_the_server_refused_it(live_server, make_client):
    from flux_nb.errors import FluxServerError
    from flux_nb.protocol import RetryPolicy

    server = live_server()
    gateway = _ScriptedTransport("gateway-502")
    with pytest.raises(FluxServerError):
        make_client(endpoint=server.url, transport=gateway, retry=RetryPolicy(base=0.01)).generate("x", seed=1)
    assert gateway.calls["submit"] == 1  # a 502 may come after the job was made: never re-sent
    busy = _ScriptedTransport("busy-503-once")
    res = make_client(endpoint=server.url, transport=busy, retry=RetryPolicy(base=0.01)).generate("x", seed=1, image_size="square")
    assert res.seed == 1 and busy.calls["submit"] == 2 and stats(server)["jobs"]["submitted"] == 1


def test_a_key_echoed_by_the_server_is_blanked(live_server, make_client):
    import traceback

    server = live_server()
    key = "sekrit" + "-echo-42"  # built at run time so the traceback's source lines don't hold it
    transport = _ScriptedTransport("echo-key", key=key)
    with pytest.raises(FluxAuthError) as info:
        make_client(endpoint=server.url, key=key, transport=transport).generate("x", seed=1)
    text = "".join(traceback.format_exception(info.value)) + repr(info.value.detail)
    assert "sekrit-echo-42" not in text and "****" in text


def test_result_of_a_cancelled_job_is_a_cancelled_error(live_server, make_client):
    server = live_server(latency=5.0, workers=1)
    client = make_client(endpoint=server.url)
    handle = client.submit(FluxRequest("slow", image_size="square"))
    client.cancel(handle)
    list(client.iter_status(handle))
    with pytest.raises(FluxCancelledError):
        client.result(handle)


def test_concurrent_cells_share_one_upload_and_missing_files_are_named(live_server, tmp_path, make_client):
    server = live_server(workers=4)
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"lora bytes" * 1000)
    client = make_client(endpoint=server.url)

    async def many():
        return await asyncio.gather(*(
            client.aio.generate("x", seed=1, image_size="square", loras=[{"path": str(lora), "scale": s / 8}])
            for s in range(8)
        ))

    assert len(_loop.run_sync(many())) == 8
    assert stats(server)["requests"]["upload"] == 1 and stats(server)["requests"]["token"] == 1
    with pytest.raises(FluxValidationError, match="loras.0.path") as info:
        client.generate("x", seed=1, loras=[str(tmp_path / "missing.safetensors")])
    assert "no such file" in str(info.value)
