"""The official ``fal_client`` package against the local server.

fal_client builds its URLs from module globals (checked in its source: ``QUEUE_URL_FORMAT +
application`` for submit, ``RUN_URL_FORMAT + application`` for run, ``REST_URL`` for the storage
token and ``CDN_URL + "/files/upload"`` for uploads), so the test points those at the server.
"""

from __future__ import annotations

import asyncio
import io

import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from PIL import Image

APP = "fal-ai/flux-lora"
TOKEN = "compat-token"
ARGS = {"prompt": "a red fox in snow", "seed": 7, "image_size": "square", "num_images": 2}


@pytest.fixture
def server(live_server, monkeypatch):
    server = live_server(token=TOKEN, workers=1)
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", server.url + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", server.url + "/run/")
    monkeypatch.setattr(fal_module, "REST_URL", server.url)
    monkeypatch.setattr(fal_module, "CDN_URL", server.url)
    monkeypatch.setenv("FAL_KEY", TOKEN)
    return server


@pytest.fixture
def client(server):
    c = fal_client.SyncClient()  # reads FAL_KEY like users' code does
    yield c
    if "_client" in c.__dict__:
        c._client.close()


def check_output(output: dict, n: int = 2) -> None:
    assert output["seed"] == 7 and output["prompt"] == ARGS["prompt"]
    assert len(output["images"]) == n and output["has_nsfw_concepts"] == [False] * n
    for image in output["images"]:
        data = httpx.get(image["url"]).content  # fal's image URLs need no key
        assert Image.open(io.BytesIO(data)).size == (image["width"], image["height"]) == (512, 512)


def test_submit_then_result(client):
    handle = client.submit(APP, ARGS)
    assert handle.request_id
    check_output(handle.get())
    # and again by id, as fal_client builds the URLs itself
    assert client.result(APP, handle.request_id)["seed"] == 7


def test_subscribe_with_logs_and_queue_updates(client):
    updates: list = []
    enqueued: list = []
    output = client.subscribe(APP, ARGS, with_logs=True, on_queue_update=updates.append, on_enqueue=enqueued.append)
    check_output(output)
    assert len(enqueued) == 1
    assert isinstance(updates[-1], fal_client.Completed)
    assert updates[-1].error is None and "inference_time" in updates[-1].metrics
    messages = [log["message"] for log in updates[-1].logs]
    assert any("preview image 2/2" in m for m in messages)


def test_status_polling(client):
    handle = client.submit(APP, ARGS)
    seen = list(handle.iter_events(with_logs=True, interval=0.02))
    assert isinstance(seen[-1], fal_client.Completed)
    assert all(isinstance(s, (fal_client.Queued, fal_client.InProgress, fal_client.Completed)) for s in seen)
    status = client.status(APP, handle.request_id, with_logs=True)
    assert isinstance(status, fal_client.Completed) and status.logs


def test_cancel(live_server, monkeypatch):
    server = live_server(token=TOKEN, workers=1, latency=2.0)
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", server.url + "/")
    c = fal_client.SyncClient(key=TOKEN)
    running = c.submit(APP, ARGS)
    queued = c.submit(APP, ARGS)
    assert isinstance(queued.status(), fal_client.Queued)
    queued.cancel()
    running.cancel()
    done = list(queued.iter_events(interval=0.02))[-1]
    assert isinstance(done, fal_client.Completed) and done.error_type == "request_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        queued.cancel()  # already completed
    assert exc.value.status_code == 400
    c._client.close()


def test_run(client):
    check_output(client.run(APP, {**ARGS, "num_images": 1}), n=1)


def test_wrong_key_and_bad_input_errors(server):
    bad = fal_client.SyncClient(key="wrong")
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        bad.submit(APP, ARGS)
    assert exc.value.status_code == 401
    good = fal_client.SyncClient(key=TOKEN)
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        good.submit(APP, {**ARGS, "num_images": 12})
    assert exc.value.status_code == 422 and exc.value.error_type == "validation_error"
    bad._client.close()
    good._client.close()


def test_upload_through_storage_protocol(client, server):
    data = b"fake lora weights" * 64
    url = client.upload(data, "application/octet-stream", file_name="style.safetensors")
    assert url.startswith(server.url + "/files/uploads/")
    assert httpx.get(url).content == data


def test_async_client(server):
    async def main():
        c = fal_client.AsyncClient(key=TOKEN)
        handle = await c.submit(APP, ARGS)
        output = await handle.get()
        events = []
        subscribed = await c.subscribe(APP, {**ARGS, "num_images": 1}, with_logs=True, on_queue_update=events.append)
        run = await c.run(APP, {**ARGS, "num_images": 1})
        url = await c.upload(b"abc", "text/plain", file_name="a.txt")
        return output, subscribed, events, run, url

    output, subscribed, events, run, url = asyncio.run(main())
    check_output(output)
    check_output(subscribed, n=1)
    check_output(run, n=1)
    assert isinstance(events[-1], fal_client.Completed)
    assert httpx.get(url).content == b"abc"


@pytest.fixture
def small_parts(monkeypatch):
    """fal_client's multipart upload for anything over 1000 bytes, in 4 KiB parts (not 100 MB / 10 MB)."""
    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 4096)


def test_multipart_upload(client, server, small_parts, tmp_path):
    data = bytes(range(256)) * 200  # 51,200 bytes: 13 parts, sent 10 at a time, finishing in any order
    url = client.upload(data, "application/octet-stream", file_name="big lora.safetensors")
    assert url.startswith(server.url + "/files/uploads/") and url.endswith("/big_lora.safetensors")
    assert httpx.get(url).content == data  # no key needed, like every file URL the server hands out
    stats = httpx.get(server.url + "/stats", headers={"Authorization": f"Key {TOKEN}"}).json()
    assert stats["requests"]["upload"] == 1 + 13 + 1  # start, the parts, complete

    path = tmp_path / "weights.safetensors"
    path.write_bytes(data[::-1])
    url = client.upload_file(path)
    assert url.endswith("/weights.safetensors") and httpx.get(url).content == data[::-1]


def test_async_multipart_upload(server, small_parts):
    data = b"0123456789abcdef" * 1000

    async def main():
        c = fal_client.AsyncClient(key=TOKEN)
        return await c.upload(data, "application/octet-stream", file_name="async.bin")

    url = asyncio.run(main())
    assert httpx.get(url).content == data
