"""Protocol conformance of the local server over real loopback HTTP: codes, keys, SSE, cancel, errors."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import threading

import httpx
import pytest
from PIL import Image

from servers import APP, read_sse, sse_statuses, wait_status

STATUS_KEYS = {"status", "request_id", "queue_position", "logs", "response_url", "status_url", "cancel_url"}
LOG_KEYS = {"message", "level", "source", "timestamp"}


@pytest.fixture
def server(live_server):
    return live_server(workers=2)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def submit(client: httpx.Client, **body) -> dict:
    body.setdefault("prompt", "a red fox in snow")
    response = client.post(f"/{APP}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_submit_answers_every_key_with_absolute_urls(client, server):
    handle = submit(client, seed=7)
    assert handle["status"] == "IN_QUEUE"
    assert isinstance(handle["queue_position"], int)
    rid = handle["request_id"]
    base = f"{server.url}/{APP}/requests/{rid}"
    assert handle["response_url"] == base
    assert handle["status_url"] == base + "/status"
    assert handle["cancel_url"] == base + "/cancel"


def test_public_url_is_used_in_answers(live_server):
    server = live_server(public_url="https://flux.example.test/")
    with httpx.Client(base_url=server.url) as c:
        handle = submit(c)
    assert handle["status_url"].startswith(f"https://flux.example.test/{APP}/requests/")


def test_status_codes_keys_and_cumulative_logs(client):
    handle = submit(client, seed=1)
    first = client.get(handle["status_url"], params={"logs": "1"})
    assert first.status_code in (200, 202)
    assert STATUS_KEYS <= set(first.json())
    done = wait_status(client, handle["status_url"], "COMPLETED", logs=1)
    final = client.get(handle["status_url"], params={"logs": "true"})
    assert final.status_code == 200
    body = final.json()
    assert STATUS_KEYS <= set(body) and body["status"] == "COMPLETED"
    assert body["queue_position"] is None
    assert isinstance(body["metrics"]["inference_time"], float)
    assert "error" not in body
    assert all(LOG_KEYS == set(entry) for entry in body["logs"])
    messages = [entry["message"] for entry in body["logs"]]
    assert messages[: len(done["logs"])] == [e["message"] for e in done["logs"]]  # cumulative
    assert any("preview image 1/1" in m for m in messages)
    # logs off: the key is there, null
    assert client.get(handle["status_url"], params={"logs": "0"}).json()["logs"] is None
    assert client.get(handle["status_url"]).json()["logs"] is None


def test_status_202_while_running(live_server):
    server = live_server(workers=1, latency=0.5)
    with httpx.Client(base_url=server.url) as c:
        handle = submit(c)
        response = c.get(handle["status_url"])
        assert response.status_code == 202
        assert response.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
        result = c.get(handle["response_url"])
        assert result.status_code == 400
        assert result.json()["error_type"] == "request_in_progress"


def test_result_output_and_image_files(client):
    handle = submit(client, seed=42, num_images=2, image_size="square", output_format="png")
    wait_status(client, handle["status_url"], "COMPLETED")
    response = client.get(handle["response_url"])
    assert response.status_code == 200
    out = response.json()
    assert set(out) >= {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}
    assert out["seed"] == 42 and out["prompt"] == "a red fox in snow"
    assert out["has_nsfw_concepts"] == [False, False]
    assert len(out["images"]) == 2
    datas = []
    for image in out["images"]:
        assert set(image) == {"url", "content_type", "width", "height", "file_name", "file_size"}
        assert (image["width"], image["height"], image["content_type"]) == (512, 512, "image/png")
        got = client.get(image["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert len(got.content) == image["file_size"]
        assert Image.open(io.BytesIO(got.content)).size == (512, 512)
        datas.append(got.content)
    assert datas[0] != datas[1]  # image i uses seed + i


def test_server_picks_and_reports_a_seed(client):
    handle = submit(client)
    wait_status(client, handle["status_url"], "COMPLETED")
    seed = client.get(handle["response_url"]).json()["seed"]
    assert isinstance(seed, int) and seed >= 0


def test_sync_mode_answers_data_uris(client):
    handle = submit(client, sync_mode=True, image_size="square")
    wait_status(client, handle["status_url"], "COMPLETED")
    image = client.get(handle["response_url"]).json()["images"][0]
    assert image["url"].startswith("data:image/jpeg;base64,")


def test_sync_run_endpoint_answers_the_output(client):
    response = client.post(f"/run/{APP}", json={"prompt": "sync run", "seed": 3, "image_size": "square"})
    assert response.status_code == 200
    out = response.json()
    assert out["seed"] == 3 and out["images"][0]["width"] == 512
    assert client.get(out["images"][0]["url"]).status_code == 200
    bad = client.post(f"/run/{APP}", json={"prompt": "x", "num_images": 9})
    assert bad.status_code == 422


def test_sse_framing_and_end_after_completed(live_server):
    server = live_server(workers=1, latency=0.2)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handle = submit(c, num_images=2)
        with c.stream("GET", handle["status_url"] + "/stream", params={"logs": "1"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(v) for kind, v in read_sse(response) if kind == "data"]
    assert events[-1]["status"] == "COMPLETED"
    assert all(e["status"] != "COMPLETED" for e in events[:-1])
    assert all(STATUS_KEYS <= set(e) for e in events)
    assert len(events) >= 3  # in progress, log lines, completed: one event per change
    assert all(json.dumps(a) != json.dumps(b) for a, b in zip(events, events[1:]))  # only changes
    log_counts = [len(e["logs"]) for e in events]
    assert log_counts == sorted(log_counts)  # cumulative


def test_sse_keepalive_comment(live_server):
    server = live_server(workers=1, latency=0.6, sse_keepalive=0.1)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handle = submit(c)
        with c.stream("GET", handle["status_url"] + "/stream") as response:
            kinds = [kind for kind, _ in read_sse(response)]
    assert "comment" in kinds and kinds[-1] == "data"


def test_stream_of_finished_job_sends_completed_once(client):
    handle = submit(client)
    wait_status(client, handle["status_url"], "COMPLETED")
    events = sse_statuses(client, handle["status_url"])
    assert [e["status"] for e in events] == ["COMPLETED"]


def test_cancel_queued_job_never_runs(live_server):
    server = live_server(workers=1, latency=0.5)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        running = submit(c)
        queued = submit(c)
        assert queued["queue_position"] == 0 or c.get(queued["status_url"]).json()["status"] == "IN_QUEUE"
        response = c.put(queued["cancel_url"])
        assert response.status_code == 202 and response.json() == {"status": "CANCELLATION_REQUESTED"}
        status = c.get(queued["status_url"], params={"logs": 1}).json()
        assert status["status"] == "COMPLETED" and status["error_type"] == "request_cancelled"
        assert not any("started" in e["message"] for e in status["logs"])
        result = c.get(queued["response_url"])
        assert result.status_code == 400 and result.json()["error_type"] == "request_cancelled"
        assert result.headers["x-fal-error-type"] == "request_cancelled"
        again = c.put(queued["cancel_url"])
        assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
        wait_status(c, running["status_url"], "COMPLETED")
        stats = c.get("/stats").json()
    assert stats["jobs"]["cancelled"] == 1 and stats["jobs"]["completed"] == 1


def test_cancel_running_job_stops_it(live_server):
    server = live_server(workers=1, latency=5.0)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handle = submit(c, num_images=4)
        wait_status(c, handle["status_url"], "IN_PROGRESS")
        assert c.put(handle["cancel_url"]).status_code == 202
        events = sse_statuses(c, handle["status_url"], logs=1)
        result = c.get(handle["response_url"])
    final = events[-1]
    assert final["status"] == "COMPLETED" and final["error_type"] == "request_cancelled"
    # stopped at its next check (in the engine or its first simulated wait), and no result
    assert sum("simulated work" in e["message"] for e in final["logs"]) <= 1
    assert result.status_code == 400 and result.json()["error_type"] == "request_cancelled"


def test_cancel_completed_and_unknown(client):
    handle = submit(client)
    wait_status(client, handle["status_url"], "COMPLETED")
    response = client.put(handle["cancel_url"])
    assert response.status_code == 400 and response.json()["status"] == "ALREADY_COMPLETED"
    unknown = client.put(f"/{APP}/requests/00000000-0000-0000-0000-000000000000/cancel")
    assert unknown.status_code == 404 and unknown.json()["status"] == "NOT_FOUND"


def test_unknown_ids_and_apps_are_404(client):
    for path in ("", "/status", "/status/stream"):
        response = client.get(f"/{APP}/requests/nope{path}")
        assert response.status_code == 404 and "detail" in response.json()
    assert client.post("/fal-ai/other-model", json={"prompt": "x"}).status_code == 404
    handle = submit(client)
    assert client.get(f"/fal-ai/other-model/requests/{handle['request_id']}").status_code == 404


def test_422_shape_names_every_bad_field(client):
    response = client.post(f"/{APP}", json={"prompt": "", "num_inference_steps": 99, "image_size": "squar", "colour": 1})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert all(set(entry) == {"loc", "msg", "type"} for entry in detail)
    locs = {tuple(entry["loc"]) for entry in detail}
    assert ("body", "colour") in locs
    assert client.get("/stats").json()["jobs"]["submitted"] == 0


def test_bad_json_and_non_object_bodies(client):
    response = client.post(f"/{APP}", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    assert client.post(f"/{APP}", json=["a list"]).status_code == 422
    assert client.post(f"/{APP}").status_code == 422


def test_server_pixel_limit_names_the_field(live_server):
    server = live_server(max_pixels=512 * 512 * 2)
    with httpx.Client(base_url=server.url) as c:
        too_big = c.post(f"/{APP}", json={"prompt": "x", "image_size": "square_hd"})
        assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["body", "image_size"]
        too_many = c.post(f"/{APP}", json={"prompt": "x", "image_size": "square", "num_images": 3})
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "num_images"]
        assert c.post(f"/{APP}", json={"prompt": "x", "image_size": "square", "num_images": 2}).status_code == 200


def test_oversized_body_is_413(live_server):
    server = live_server(max_body=1000)
    with httpx.Client(base_url=server.url) as c:
        response = c.post(f"/{APP}", json={"prompt": "x" * 2000})
        assert response.status_code == 413 and "detail" in response.json()

        def chunks():  # no Content-Length: the limit must hold while streaming too
            for _ in range(5):
                yield b" " * 400

        assert c.post(f"/{APP}", content=chunks()).status_code == 413
        assert c.get("/stats").json()["jobs"]["submitted"] == 0


def test_wrong_methods_are_405(client):
    assert client.get(f"/{APP}").status_code == 405
    assert client.post(f"/{APP}/requests/x/status").status_code == 405
    assert client.get(f"/{APP}/requests/x/cancel").status_code == 405
    response = client.delete("/health")
    assert response.status_code == 405 and "detail" in response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../../etc/passwd",
        "/files/..%2F..%2F..%2Fetc%2Fpasswd",
        "/files/results/..%2F..%2F..%2Fetc%2Fpasswd",
        "/files/%2Fetc%2Fpasswd",
        "/files/results/x/..%5C..%5Cpasswd",
        "/files/tmp/anything",
        "/files/results",
        f"/{APP}/requests/..%2F..%2Fhealth",
    ],
)
def test_path_traversal_is_404(server, path):
    # http.client sends the path exactly as written (httpx would normalise the dots away)
    host, port = server.url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 404
    assert b"root:" not in body


def test_health_and_stats(client):
    health = client.get("/health").json()
    assert health["engine"] == "preview" and health["workers"] == 2 and health["queue_length"] == 0
    a = submit(client, prompt="same", seed=5)
    b = submit(client, prompt="same", seed=5)
    submit(client, prompt="same", seed=6)
    for h in (a, b):
        wait_status(client, h["status_url"], "COMPLETED")
        client.get(h["response_url"])
    stats = client.get("/stats").json()
    assert stats["jobs"]["submitted"] == 3
    assert stats["duplicate_submissions"] == 1
    assert stats["requests"]["submit"] == 3 and stats["requests"]["result"] == 2
    assert stats["requests"]["health"] == 1 and stats["requests"]["status"] >= 2


def test_storage_token_and_upload(client):
    token = client.post("/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={})
    assert token.status_code == 200
    info = token.json()
    assert set(info) >= {"token", "token_type", "base_url", "expires_at"}
    data = b"\x00lora weights\xff" * 100
    upload = client.post(
        info["base_url"] + "/files/upload",
        content=data,
        headers={"Authorization": f"{info['token_type']} {info['token']}", "Content-Type": "application/octet-stream",
                 "X-Fal-File-Name": "../my lora.safetensors"},
    )
    assert upload.status_code == 200
    url = upload.json()["access_url"]
    assert "/files/uploads/" in url and ".." not in url
    assert client.get(url).content == data
    again = client.post(info["base_url"] + "/files/upload", content=data, headers={"X-Fal-File-Name": "my lora.safetensors"})
    assert again.json()["access_url"] == url  # same bytes, same place


def test_upload_limit_is_413(live_server):
    server = live_server(max_upload=100)
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/files/upload", content=b"x" * 101).status_code == 413
        # no announced length: counted while streaming
        assert c.post("/files/upload", content=iter([b"x" * 60, b"x" * 60])).status_code == 413
        assert not list((server.state.files.root / "tmp").iterdir())  # the partial file is gone


def test_uploads_are_written_off_the_event_loop(live_server, monkeypatch):
    """A slow disk must not stall the server: while an upload's write is blocked, it still answers."""
    from flux_nb.server import uploads

    server = live_server()
    blocked, release = threading.Event(), threading.Event()
    real_write = uploads.write_and_hash

    def slow_write(out, digest, data):
        blocked.set()
        release.wait(20)
        real_write(out, digest, data)

    monkeypatch.setattr(uploads, "write_and_hash", slow_write)
    data = bytes(range(256)) * 12_000  # 3 MB: more than one write batch
    answers: list = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        uploader = threading.Thread(target=lambda: answers.append(c.post("/files/upload", content=data)))
        uploader.start()
        try:
            assert blocked.wait(20)
            # a write on the event loop would hold this answer until the write is released
            assert c.get("/health", timeout=5).status_code == 200
        finally:
            release.set()
            uploader.join(30)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["file_size"] == len(data)
        assert c.get(answers[0].json()["access_url"]).content == data
        assert f"/uploads/{hashlib.sha256(data).hexdigest()[:32]}/" in answers[0].json()["access_url"]


def start_multipart(c: httpx.Client, auth: dict, name: str = "lora.safetensors") -> tuple[str, str]:
    response = c.post("/files/upload/multipart", headers={**auth, "X-Fal-File-Name": name})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["access_url"], body["uploadId"]


def test_multipart_upload_protocol(live_server):
    server = live_server(token="s3cret", max_upload=10_000)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        token = c.post("/storage/auth/token", headers={"Authorization": "Key s3cret"}, json={}).json()
        auth = {"Authorization": f"{token['token_type']} {token['token']}"}  # the storage token, as fal_client sends
        url, upload_id = start_multipart(c, auth, "../my lora.safetensors")
        assert url.startswith(server.url + "/files/uploads/") and url.endswith("/my_lora.safetensors") and "?" not in url
        assert c.get(url).status_code == 404  # nothing there until complete

        chunks = {1: b"a" * 3000, 2: b"b" * 3000, 3: b"c" * 100}
        etags = {}
        for number in (3, 1, 2):  # any order
            response = c.put(f"{url}/multipart/{upload_id}/{number}", content=chunks[number], headers=auth)
            assert response.status_code == 200, response.text
            etags[number] = response.headers["etag"]
        again = c.put(f"{url}/multipart/{upload_id}/2", content=b"B" * 3000, headers=auth)  # a part sent again replaces it
        etags[2] = again.headers["etag"]
        assert len(set(etags.values())) == 3

        # refused: bad part numbers, unknown ids, no token, a total over max_upload
        for part in ("0", "10001", "x", "\u0662"):
            assert c.put(f"{url}/multipart/{upload_id}/{part}", content=b"x", headers=auth).status_code == 400
        assert c.put(f"{url}/multipart/{'0' * 32}/4", content=b"x", headers=auth).status_code == 404
        other_url, _ = start_multipart(c, auth)
        assert c.put(f"{other_url}/multipart/{upload_id}/4", content=b"x", headers=auth).status_code == 404
        assert c.put(f"{url}/multipart/{upload_id}/4", content=b"x").status_code == 401
        assert c.put(f"{url}/multipart/{upload_id}/4", content=b"x" * 3901, headers=auth).status_code == 413

        complete = f"{url}/multipart/{upload_id}/complete"
        parts = [{"partNumber": n, "etag": etags[n]} for n in (2, 3, 1)]
        for bad in ({}, {"parts": []}, {"parts": [{"partNumber": 1, "etag": '"nope"'}]},
                    {"parts": [{"partNumber": 4, "etag": etags[1]}]}, {"parts": parts + parts[:1]}):
            assert c.post(complete, json=bad, headers=auth).status_code == 400, bad
        done = c.post(complete, json={"parts": parts}, headers=auth)
        assert done.status_code == 200 and done.json() == {"access_url": url, "file_size": 6100}
        assert c.post(complete, json={"parts": parts}, headers=auth).json() == done.json()  # a retry: same answer
        assert c.put(f"{url}/multipart/{upload_id}/1", content=b"x", headers=auth).status_code == 409

        assert c.get(url).content == b"a" * 3000 + b"B" * 3000 + b"c" * 100  # no token needed
        folder = url.split("/")[-2]
        forged = url.replace(folder, folder[:16] + "0" * 16)
        assert c.get(forged).status_code == 401
        assert c.get("/stats", headers=auth).status_code == 401  # the storage token opens uploads only
        assert not list((server.state.files.root / "tmp" / "multipart").iterdir())  # parts are gone


def test_abandoned_multipart_uploads_are_dropped(live_server):
    server = live_server()
    uploads = server.state.multipart
    now = [0.0]
    uploads.clock = lambda: now[0]
    with httpx.Client(base_url=server.url, timeout=20) as c:
        url, upload_id = start_multipart(c, {})
        assert c.put(f"{url}/multipart/{upload_id}/1", content=b"x" * 10).status_code == 200
        parts = server.state.files.root / "tmp" / "multipart" / upload_id
        assert parts.is_dir()
        now[0] = uploads.ttl + 1
        start_multipart(c, {})  # starting another sweeps the abandoned one
        assert not parts.exists()
        assert c.put(f"{url}/multipart/{upload_id}/2", content=b"x").status_code == 404
        uploads.most_open = len(uploads)
        assert c.post("/files/upload/multipart").status_code == 429
