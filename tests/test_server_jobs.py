"""The job queue behind the server: queue positions, priorities, TTL purge, failures, shutdown, auth."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flux_nb.server.engines.base import EngineInputError, EngineOutput
from flux_nb.server.engines.preview import PreviewEngine
from servers import APP, sse_statuses, wait_status


def submit(client: httpx.Client, headers: dict | None = None, **body) -> dict:
    body.setdefault("prompt", "a lighthouse at dusk")
    body.setdefault("image_size", "square")
    response = client.post(f"/{APP}", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def test_queue_positions_move_with_one_worker(live_server):
    server = live_server(workers=1, latency=0.3)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handles = [submit(c, seed=i) for i in range(4)]
        # the first is picked at once; the others wait in order
        wait_status(c, handles[0]["status_url"], "IN_PROGRESS")
        positions = [c.get(h["status_url"]).json()["queue_position"] for h in handles[1:]]
        assert positions == [0, 1, 2]
        events = sse_statuses(c, handles[3]["status_url"])
        seen = [e["queue_position"] for e in events if e["status"] == "IN_QUEUE"]
        assert seen == sorted(seen, reverse=True) and seen[-1] == 0 and len(set(seen)) >= 2
        assert events[-1]["status"] == "COMPLETED"
        assert c.get("/health").json()["queue_length"] == 0


def test_low_priority_waits_behind_normal(live_server):
    server = live_server(workers=1, latency=0.3)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        first = submit(c, seed=0)
        low = submit(c, seed=1, headers={"X-Fal-Queue-Priority": "low"})
        normal = submit(c, seed=2)
        wait_status(c, first["status_url"], "IN_PROGRESS")
        assert c.get(normal["status_url"]).json()["queue_position"] == 0
        assert c.get(low["status_url"]).json()["queue_position"] == 1


def test_start_timeout_fails_a_job_that_waited_too_long(live_server):
    server = live_server(workers=1, latency=1.5)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        submit(c)
        late = submit(c, headers={"X-Fal-Request-Timeout": "0.2"})
        final = sse_statuses(c, late["status_url"])[-1]
        assert final["error_type"] == "request_timeout"
        assert c.get(late["response_url"]).status_code == 504


def test_results_are_purged_after_ttl(live_server):
    server = live_server(result_ttl=0.3)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handle = submit(c)
        wait_status(c, handle["status_url"], "COMPLETED")
        image_url = c.get(handle["response_url"]).json()["images"][0]["url"]
        assert c.get(image_url).status_code == 200
        time.sleep(0.8)
        assert c.get(handle["response_url"]).status_code == 404
        assert c.get(handle["status_url"]).status_code == 404
        assert c.get(image_url).status_code == 404  # its file went with it


class ExplodingEngine(PreviewEngine):
    """A preview engine that fails on some prompts, like a model would."""

    name = "exploding"

    def check(self, request):
        if "refuse" in request.prompt:
            raise EngineInputError("loras.0.path", "x", "does not fit this model")

    def generate(self, request, seed, ctx):
        if "input" in request.prompt:
            raise EngineInputError("loras.0.scale", 9, "too strong for this model")
        if "crash" in request.prompt:
            raise RuntimeError("out of memory")
        return super().generate(request, seed, ctx)


def test_engine_failures_are_replayed(live_server):
    server = live_server(engine=ExplodingEngine())
    with httpx.Client(base_url=server.url, timeout=20) as c:
        refused = c.post(f"/{APP}", json={"prompt": "refuse this"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "loras", 0, "path"]

        crash = submit(c, prompt="crash")
        final = sse_statuses(c, crash["status_url"])[-1]
        assert final["status"] == "COMPLETED" and final["error_type"] == "internal_server_error"
        assert "out of memory" in final["error"]
        result = c.get(crash["response_url"])
        assert result.status_code == 500 and result.headers["x-fal-error-type"] == "internal_server_error"
        assert result.headers["x-fal-retryable"] == "false"  # a real model error: it would fail again

        bad = submit(c, prompt="bad input")
        wait_status(c, bad["status_url"], "COMPLETED")
        result = c.get(bad["response_url"])
        assert result.status_code == 422 and result.json()["detail"][0]["loc"] == ["body", "loras", 0, "scale"]

        ok = submit(c, prompt="fine")  # the server keeps serving
        wait_status(c, ok["status_url"], "COMPLETED")
        assert c.get(ok["response_url"]).status_code == 200
        stats = c.get("/stats").json()["jobs"]
        assert stats == {"submitted": 3, "completed": 1, "cancelled": 0, "failed": 2}


class SlowEngine(PreviewEngine):
    """Holds each job until released, checking for cancellation, and counts concurrency."""

    name = "slow"
    max_concurrency = 1

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def generate(self, request, seed, ctx):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            while not self.release.wait(0.01):
                ctx.check_cancelled()
            return super().generate(request, seed, ctx)
        finally:
            with self.lock:
                self.active -= 1


def test_engine_max_concurrency_bounds_workers(live_server):
    engine = SlowEngine()
    server = live_server(engine=engine, workers=4)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        assert c.get("/health").json()["workers"] == 1
        handles = [submit(c, seed=i) for i in range(3)]
        wait_status(c, handles[0]["status_url"], "IN_PROGRESS")
        assert c.get(handles[2]["status_url"]).json()["queue_position"] == 1
        engine.release.set()
        for h in handles:
            wait_status(c, h["status_url"], "COMPLETED")
    assert engine.most_active == 1


def test_shutdown_ends_every_job_and_stream(live_server):
    engine = SlowEngine()
    server = live_server(engine=engine, workers=1)
    results: dict = {}
    with httpx.Client(base_url=server.url, timeout=20) as c:
        running = submit(c)
        queued = submit(c)
        wait_status(c, running["status_url"], "IN_PROGRESS")

        def watch():
            with httpx.Client(timeout=20) as w:
                results["events"] = sse_statuses(w, running["status_url"])

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.2)
        jobs = server.state.jobs
        server.stop()
        watcher.join(10)
    assert not watcher.is_alive()
    assert results["events"][-1]["status"] == "COMPLETED"
    assert results["events"][-1]["error_type"] == "request_cancelled"
    assert jobs.closed and jobs.running == 0 and jobs.queue_length == 0
    assert engine.active == 0  # the engine thread stopped at its next check
    assert jobs.get(queued["request_id"]).outcome == "cancelled"
    assert not server.state.files.root.exists()  # its private folder is gone


def test_token_auth(live_server):
    server = live_server(token="s3cret")
    with httpx.Client(base_url=server.url, timeout=20) as c:
        assert c.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Key wrong"}, {"Authorization": "s3cret"}, {"Authorization": "Key s3cre"}):
            response = c.post(f"/{APP}", json={"prompt": "x"}, headers=headers)
            assert response.status_code == 401 and "detail" in response.json()
            assert "s3cret" not in response.text
        assert c.get("/stats").status_code == 401
        assert c.get(f"/{APP}/requests/x/status").status_code == 401
        assert c.post(f"/{APP}", json={"prompt": "x"}, headers={"Authorization": "Key caf\u00e9".encode("latin-1")}).status_code == 401

        handle = submit(c, headers={"Authorization": "Key s3cret"})
        bearer = {"Authorization": "Bearer s3cret"}
        with httpx.Client(headers=bearer, timeout=20) as authed:
            wait_status(authed, handle["status_url"], "COMPLETED")
        out = c.get(handle["response_url"], headers=bearer).json()
        url = out["images"][0]["url"]
        assert "sig=" in url
        assert c.get(url).status_code == 200  # signed image URLs need no token, like fal's
        assert c.get(url.replace("sig=", "sig=0")).status_code == 401
        assert c.get(url.split("?")[0]).status_code == 401
        stats = c.get("/stats", headers=bearer).json()
        assert stats["jobs"]["submitted"] == 1  # refused requests made no job

        token = c.post("/storage/auth/token", headers=bearer, json={}).json()
        assert "s3cret" not in token["token"]
        upload = c.post("/files/upload", content=b"abc", headers={"Authorization": f"Bearer {token['token']}"})
        assert upload.status_code == 200
        assert c.get(upload.json()["access_url"]).content == b"abc"
        # the upload token opens the upload endpoint only
        assert c.get("/stats", headers={"Authorization": f"Bearer {token['token']}"}).status_code == 401


def test_bad_options_are_refused():
    from flux_nb.server.app import create_app

    with pytest.raises(ValueError, match="app_id"):
        create_app(PreviewEngine(), app_id="flux-lora")
    with pytest.raises(ValueError, match="fail_rate"):
        create_app(PreviewEngine(), fail_rate=2)
    with pytest.raises(ValueError, match="workers"):
        create_app(PreviewEngine(), workers=0)


def test_other_app_ids_can_be_served(live_server):
    server = live_server(app_id=["fal-ai/flux-lora", "me/my-flux"])
    with httpx.Client(base_url=server.url, timeout=20) as c:
        response = c.post("/me/my-flux", json={"prompt": "x", "image_size": "square"})
        assert response.status_code == 200
        assert "/me/my-flux/requests/" in response.json()["status_url"]
        wait_status(c, response.json()["status_url"], "COMPLETED")
        # a job is reached only through its own app
        assert c.get(f"/{APP}/requests/{response.json()['request_id']}").status_code == 404


class FileReadingEngine(PreviewEngine):
    """Reads each LoRA through ctx.resolve_file, as a real engine loads weights."""

    name = "file-reading"

    def generate(self, request, seed, ctx):
        for lora in request.loras:
            ctx.log(f"lora bytes: {ctx.resolve_file(lora.path).read_bytes().decode()}")
        return super().generate(request, seed, ctx)


def test_engines_resolve_uploaded_and_remote_lora_files(live_server, tmp_path):
    server = live_server(engine=FileReadingEngine(), token="t")
    other = live_server()
    auth = {"Authorization": "Key t"}
    with httpx.Client(base_url=server.url, timeout=20, headers=auth) as c, httpx.Client(base_url=other.url) as o:
        own = c.post("/files/upload", content=b"own-weights").json()["access_url"]
        remote = o.post("/files/upload", content=b"remote-weights").json()["access_url"]
        start = c.post("/files/upload/multipart", headers={"X-Fal-File-Name": "big.safetensors"}).json()
        big, upload_id = start["access_url"], start["uploadId"]
        etags = [c.put(f"{big}/multipart/{upload_id}/{n}", content=part).headers["etag"] for n, part in ((1, b"big-"), (2, b"weights"))]
        c.post(f"{big}/multipart/{upload_id}/complete", json={"parts": [{"partNumber": n + 1, "etag": e} for n, e in enumerate(etags)]})
        local = tmp_path / "local.safetensors"
        local.write_bytes(b"local-weights")

        def run(path):
            handle = submit(c, loras=[{"path": path, "scale": 1}])
            final = sse_statuses(c, handle["status_url"], logs=1)[-1]
            return final, c.get(handle["response_url"])

        for path, content in ((own, b"own-weights"), (big, b"big-weights")):
            final, result = run(path)
            assert result.status_code == 200
            assert any(e["message"] == f"lora bytes: {content.decode()}" for e in final["logs"])
        # A URL on this machine or its network is not fetched unless the operator allows local sources.
        final, result = run(remote)
        assert result.status_code == 422 and "private or local" in result.json()["detail"][0]["msg"]
        final, result = run(str(local))  # local paths are refused unless the server allows them
        assert result.status_code == 422 and result.json()["detail"][0]["loc"][:2] == ["body", "loras"]

    trusting = live_server(engine=FileReadingEngine(), token="t", allow_local_paths=True)
    with httpx.Client(base_url=trusting.url, timeout=20, headers=auth) as c:
        for _ in range(2):  # the second time from the server's cache
            handle = submit(c, loras=[{"path": remote, "scale": 1}])
            final = sse_statuses(c, handle["status_url"], logs=1)[-1]
            assert c.get(handle["response_url"]).status_code == 200
            assert any(e["message"] == "lora bytes: remote-weights" for e in final["logs"])
