"""Hostile or broken server answers meet the real client: clear FluxErrors, bounded memory, no stray files.

Every case runs the real :class:`~flux_nb.client.FluxClient` over real loopback HTTP against
:class:`hostile.HostileServer`, which plays fal's protocol correctly except for the one answer a
test replaces.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import traceback
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from flux_nb.client import MAX_ANSWER_BYTES, FluxClient
from flux_nb.errors import FluxError, FluxProtocolError
from flux_nb.protocol import RetryPolicy
from hostile import (
    APP,
    HostileServer,
    drop,
    fal_output,
    json_reply,
    png_bomb,
    png_bytes,
    raw,
    redirect,
)

RESULT = f"/{APP}/requests/*"
STREAM = f"/{APP}/requests/*/status/stream"


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


def make_client(server: HostileServer, **options) -> FluxClient:
    options.setdefault("store", False)
    options.setdefault("retry", RetryPolicy(attempts=2, base=0.01, cap=0.02))
    options.setdefault("request_timeout", 10)
    options.setdefault("timeout", 30)
    return FluxClient(endpoint=server.url, **options)


def generate_error(server: HostileServer, **options) -> FluxError:
    """Run one generation that must fail; returns the error after checking its shape."""
    client = make_client(server, **options)
    try:
        with pytest.raises(FluxError) as info:
            client.generate("hostile", seed=1, image_size="square")
    finally:
        client.close()
    error = info.value
    text = "".join(traceback.format_exception(error))
    # A clear, one-level error: no raw httpx/json/PIL exception chained under it.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), text
    assert str(error).strip()
    return error


def test_the_hostile_server_plays_fal_correctly_by_default(hostile):
    client = make_client(hostile)
    res = client.generate("a fine answer", seed=1, image_size="square")
    client.close()
    assert res.images[0].to_pil().size == (64, 64)
    assert hostile.jobs_created == 1


@pytest.mark.parametrize(
    "where, body",
    [
        (f"/{APP}", b"{not json"),
        (f"/{APP}", b"\xff\xfe\x00garbage"),
        (RESULT, b'{"images": [{"url": '),
        (RESULT, b"null"),
    ],
    ids=["submit-bad-json", "submit-binary", "result-truncated-json", "result-null"],
)
def test_malformed_json_is_a_protocol_error(hostile, where, body):
    method = "POST" if where == f"/{APP}" else "GET"
    hostile.route(method, where, raw(body, headers={"Content-Type": "application/json"}))
    error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError)


def test_malformed_status_events_are_a_protocol_error(hostile):
    hostile.route("GET", STREAM, raw(b"data: {oops\n\n", headers={"Content-Type": "text/event-stream"}))
    assert isinstance(generate_error(hostile), FluxProtocolError)


@pytest.mark.parametrize(
    "where, body",
    [
        (f"/{APP}", lambda s: {k: v for k, v in s.handle_body().items() if k != "status_url"}),
        (f"/{APP}", lambda s: {**s.handle_body(), "request_id": 12345}),
        (f"/{APP}", lambda s: {**s.handle_body(), "response_url": "file:///etc/passwd"}),
        (f"/{APP}", lambda s: [s.handle_body()]),
        (RESULT, lambda s: {"seed": 1}),
        (RESULT, lambda s: fal_output([s.url + "/files/image.png"], seed="42")),
        (RESULT, lambda s: {**fal_output([]), "images": {"url": s.url + "/files/image.png"}}),
        (RESULT, lambda s: {**fal_output([]), "images": [{"url": 7}]}),
        (RESULT, lambda s: {**fal_output([]), "images": ["not an object"]}),
    ],
    ids=["no-status-url", "id-not-string", "file-response-url", "handle-in-list", "no-images",
         "seed-string", "images-object", "url-int", "image-string"],
)
def test_missing_keys_and_wrong_types_are_protocol_errors(hostile, where, body):
    method = "POST" if where == f"/{APP}" else "GET"
    hostile.route(method, where, json_reply(body))
    error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError)
    assert not hostile.seen(contains="/etc/passwd")


def test_unknown_status_value_is_a_protocol_error(hostile):
    event = b'data: {"status": "EXPLODED", "request_id": "x"}\n\n'
    hostile.route("GET", STREAM, raw(event, headers={"Content-Type": "text/event-stream"}))
    assert isinstance(generate_error(hostile), FluxProtocolError)


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b"<html>this is not an image</html>", "image/png"),
        (png_bytes(noise=True)[:100], "image/png"),  # cut inside the header chunks
        (png_bytes(noise=True)[:6000], "image/png"),  # cut in the middle of the pixels
        (b"", "image/jpeg"),
    ],
    ids=["html", "truncated-head", "truncated-tail", "empty"],
)
def test_bad_image_bodies_are_protocol_errors(hostile, body, ctype):
    hostile.route("GET", "/files/*", raw(body, headers={"Content-Type": ctype}))
    error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError) and "image" in str(error)


def test_bad_data_uri_is_a_protocol_error(hostile):
    hostile.route("GET", RESULT, json_reply(fal_output(["data:image/png;base64,!!!not-base64!!!"])))
    assert isinstance(generate_error(hostile), FluxProtocolError)


def test_data_uri_with_a_non_image_is_a_protocol_error(hostile):
    uri = "data:image/png;base64," + base64.b64encode(b"#!/bin/sh\nrm -rf /\n").decode()
    hostile.route("GET", RESULT, json_reply(fal_output([uri])))
    assert isinstance(generate_error(hostile), FluxProtocolError)


def _current_rss_mb() -> float:
    """Resident memory of this process right now, MiB (``ru_maxrss`` is an all-time peak: useless here)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def rss_growth() -> Iterator[list[float]]:
    """Sample current RSS in a thread during the block; yields a list whose one item, after the
    block, is the highest RSS seen minus the RSS before it (MiB)."""
    before = _current_rss_mb()
    highest = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            highest[0] = max(highest[0], _current_rss_mb())
            stop.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    growth: list[float] = []
    try:
        yield growth
    finally:
        stop.set()
        sampler.join()
        growth.append(max(highest[0], _current_rss_mb()) - before)


def test_decompression_bomb_is_refused_without_decoding_it(hostile):
    bomb = png_bomb()  # 50000 x 50000 pixels: 2.5 GB decoded, about 2.4 MB on the wire
    assert len(bomb) < 5 * 1024 * 1024
    hostile.image = bomb
    with rss_growth() as growth:
        error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError)
    # Decoding even a tenth of it would need 250 MB more; the download itself is a few MB.
    assert growth[0] < 150


def test_the_same_bomb_as_a_data_uri_is_refused(hostile):
    uri = "data:image/png;base64," + base64.b64encode(png_bomb()).decode()
    hostile.route("GET", RESULT, json_reply(fal_output([uri])))
    with rss_growth() as growth:
        assert isinstance(generate_error(hostile), FluxProtocolError)
    assert growth[0] < 150


def test_oversized_json_answer_is_cut_off(hostile):
    size = MAX_ANSWER_BYTES + 8 * 1024 * 1024
    padding = b" " * (size - 2)
    hostile.route("GET", RESULT, raw(b"{" + padding + b"}", headers={"Content-Type": "application/json"}))
    with rss_growth() as growth:
        error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError) and "larger than flux-nb accepts" in str(error)
    # the answer is read up to the limit, never whole, and not retried into memory again and again
    assert growth[0] < 3 * size / 1024 / 1024


def test_dropped_result_answers_end_as_connection_errors(hostile):
    hostile.route("GET", RESULT, drop(b'{"images": [{"url": "'))
    error = generate_error(hostile)
    assert type(error).__name__ == "FluxConnectionError"
    assert len(hostile.seen("GET", contains="/requests/")) >= 2  # retried (idempotent) before giving up


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/image.png", "gopher://127.0.0.1/x", "javascript:alert(1)"])
def test_unsupported_image_url_schemes_are_refused(hostile, url, tmp_path):
    hostile.route("GET", RESULT, json_reply(fal_output([url])))
    error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError) and "scheme" in str(error)


def test_image_redirect_to_another_host_is_refused_and_never_followed(hostile):
    with HostileServer() as elsewhere:
        hostile.route("GET", "/files/*", redirect(lambda s: elsewhere.url + "/files/image.png"))
        error = generate_error(hostile)
        assert isinstance(error, FluxProtocolError) and "another host" in str(error)
        assert elsewhere.requests == []


def test_image_redirect_on_the_same_host_is_followed(hostile):
    hostile.route("GET", "/files/old.png", redirect(lambda s: s.url + "/files/image.png", status=301))
    hostile.route("GET", RESULT, json_reply(lambda s: fal_output([s.url + "/files/old.png"])))
    client = make_client(hostile)
    res = client.generate("moved", seed=1, image_size="square")
    client.close()
    assert res.images[0].to_pil().size == (64, 64)


def test_redirect_loops_end(hostile):
    hostile.route("GET", "/files/*", redirect(lambda s: s.url + "/files/again.png"))
    error = generate_error(hostile)
    assert isinstance(error, FluxProtocolError) and "too many" in str(error)
    assert len(hostile.seen("GET", contains="/files/")) <= 5


def test_api_redirects_are_not_followed(hostile):
    with HostileServer() as elsewhere:
        hostile.route("POST", f"/{APP}", redirect(lambda s: elsewhere.url + f"/{APP}", status=307))
        error = generate_error(hostile, key="redirect-me-key")
        assert isinstance(error, FluxProtocolError) and "redirect" in str(error)
        assert elsewhere.requests == []


def test_hostile_names_never_write_outside_the_chosen_folder(hostile, tmp_path):
    """A server-chosen file name and prompt full of ``..`` cannot steer where files land."""
    escape = tmp_path / f"escaped-{uuid.uuid4().hex}.png"
    evil = fal_output([hostile.url + "/files/image.png"], prompt="../../../../" + str(escape))
    evil["images"][0]["file_name"] = "../" * 12 + str(escape).lstrip("/")
    hostile.route("GET", RESULT, json_reply(evil))
    client = make_client(hostile)
    res = client.generate("../../../etc/cron.d/x", seed=1, image_size="square")
    client.close()
    out = tmp_path / "out"
    paths = res.save(out)
    assert paths and all(Path(p).resolve().is_relative_to(out.resolve()) for p in paths)
    assert not escape.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_store_writes_only_inside_the_data_folder(hostile, data_dir, tmp_path):
    """With the default store on, hostile names still land inside FLUX_NB_DATA_DIR."""
    evil = fal_output([hostile.url + "/files/image.png"], prompt="../../../x")
    evil["images"][0]["file_name"] = "../../../../../../escaped.png"
    hostile.route("GET", RESULT, json_reply(evil))
    outside_before = set(os.listdir(tmp_path))
    client = make_client(hostile, store=None)
    res = client.generate("../../../../etc/passwd", seed=1, image_size="square")
    client.close()
    assert res.images[0].path is not None
    assert Path(res.images[0].path).resolve().is_relative_to(Path(data_dir).resolve())
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            assert Path(root, name).resolve().is_relative_to(Path(data_dir).resolve())
    assert set(os.listdir(tmp_path)) == outside_before


def test_error_bodies_from_a_hostile_server_stay_short(hostile):
    """A 500 with a megabyte of text makes a readable error, not a megabyte message."""
    hostile.route("POST", f"/{APP}", raw(json.dumps({"detail": "x" * 1_000_000}).encode(), status=400))
    error = generate_error(hostile)
    assert len(str(error)) < 1000
