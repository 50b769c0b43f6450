"""Pure protocol rules: parsing answers, classifying errors, backoff, backend choice, key hygiene."""

import random

import pytest

from flux_nb.backend import resolve_backend
from flux_nb.errors import (
    FluxAuthError,
    FluxInputError,
    FluxNotFoundError,
    FluxProtocolError,
    FluxRateLimitError,
    FluxServerError,
)
from flux_nb.protocol import (
    RetryPolicy,
    decode_data_uri,
    error_from_response,
    parse_handle,
    parse_output,
    parse_status,
    retry_after_seconds,
    stream_url,
)

SUBMIT = {
    "request_id": "abc",
    "status": "IN_QUEUE",
    "queue_position": 0,
    "status_url": "https://q/fal-ai/flux-lora/requests/abc/status",
    "response_url": "https://q/fal-ai/flux-lora/requests/abc",
    "cancel_url": "https://q/fal-ai/flux-lora/requests/abc/cancel",
}


def test_parse_handle_follows_returned_urls_and_refuses_bad_ones():
    handle = parse_handle(SUBMIT)
    assert handle.status_url.endswith("/status") and handle.queue_position == 0
    assert stream_url(handle.status_url) == "https://q/fal-ai/flux-lora/requests/abc/status/stream?logs=1"
    for key in ("request_id", "status_url", "response_url", "cancel_url"):
        with pytest.raises(FluxProtocolError):
            parse_handle({k: v for k, v in SUBMIT.items() if k != key})
    with pytest.raises(FluxProtocolError):
        parse_handle({**SUBMIT, "status_url": "file:///etc/passwd"})
    with pytest.raises(FluxProtocolError):
        parse_handle(["not", "a", "dict"])


def test_parse_status_reads_logs_position_and_errors():
    status = parse_status(
        {"status": "IN_QUEUE", "queue_position": 3, "logs": [{"message": "hi", "level": "INFO"}, "junk"]},
        request_id="abc",
        elapsed=1.5,
    )
    assert status.queue_position == 3 and [l.message for l in status.logs] == ["hi"]
    assert status.describe().startswith("queued (position 3), 1.5 s")
    done = parse_status({"status": "COMPLETED", "logs": None, "error": "boom", "error_type": "x"}, request_id="abc")
    assert done.done and done.error == "boom"
    for bad in ({"status": "WAT"}, {}, None, {"status": 3}):
        with pytest.raises(FluxProtocolError):
            parse_status(bad, request_id="abc")


def test_parse_output_checks_keys_and_types():
    body = {"images": [{"url": "http://x/1.jpeg", "width": 4, "height": 3, "content_type": "image/jpeg"}],
            "seed": 7, "has_nsfw_concepts": [True], "timings": {"inference": 0.1}, "prompt": "p"}
    out = parse_output(body)
    assert out.seed == 7 and out.has_nsfw_concepts == (True,) and out.images[0].width == 4
    for bad in ({**body, "images": []}, {**body, "seed": "7"}, {**body, "images": [{"uri": 1}]}, "x"):
        with pytest.raises(FluxProtocolError):
            parse_output(bad)
    # too few nsfw flags are padded, wrong types ignored
    assert parse_output({**body, "has_nsfw_concepts": None}).has_nsfw_concepts == (False,)


@pytest.mark.parametrize(
    "code,kind",
    [(401, FluxAuthError), (403, FluxAuthError), (404, FluxNotFoundError), (422, FluxInputError),
     (429, FluxRateLimitError), (500, FluxServerError), (503, FluxServerError)],
)
def test_errors_are_classified_by_status_code(code, kind):
    err = error_from_response(code, {"retry-after": "2"}, b'{"detail": "nope"}', request_id="r1")
    assert isinstance(err, kind) and err.status_code == code and err.request_id == "r1"
    assert "r1" in str(err)


def test_422_detail_list_and_plain_text_bodies():
    body = b'{"detail": [{"loc": ["body", "num_images"], "msg": "too many", "type": "range"}]}'
    err = error_from_response(422, {}, body)
    assert err.errors[0]["loc"] == ["body", "num_images"] and "num_images: too many" in str(err)
    assert "gateway exploded" in str(error_from_response(502, {}, b"gateway exploded"))


def test_retry_after_and_backoff_are_bounded():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    policy = RetryPolicy(base=0.2, cap=5.0, max_retry_after=60)
    rng = random.Random(1)
    delays = [policy.delay(n, rng=rng) for n in range(1, 20)]
    assert all(0 < d <= 5.0 for d in delays) and delays[-1] >= 2.5
    assert policy.delay(1, retry_after=600) == 60


def test_data_uris():
    assert decode_data_uri("data:image/png;base64,aGk=") == (b"hi", "image/png")
    with pytest.raises(FluxProtocolError):
        decode_data_uri("data:image/png;base64,@@@")


def test_backend_choice_from_environment():
    assert resolve_backend(env={}).kind == "embedded"
    fal = resolve_backend(env={"FAL_KEY": "sekrit-123"})
    assert fal.kind == "fal" and fal.queue_url == "https://queue.fal.run"
    assert fal.auth_headers_for("https://queue.fal.run/fal-ai/flux-lora") == {"Authorization": "Key sekrit-123"}
    assert fal.auth_headers_for("https://v3.fal.media/files/x.jpeg") == {}
    pair = resolve_backend(env={"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "sec"})
    assert pair.auth_headers_for("https://queue.fal.run/x")["Authorization"] == "Key id:sec"
    local = resolve_backend(env={"FLUX_NB_ENDPOINT": "http://127.0.0.1:8765/", "FAL_KEY": "sekrit-123", "FLUX_NB_TOKEN": "tok"})
    assert local.kind == "endpoint" and local.queue_url == "http://127.0.0.1:8765"
    # the fal key never goes to a custom endpoint: only its own token
    assert local.auth_headers_for("http://127.0.0.1:8765/x") == {"Authorization": "Key tok"}
    assert resolve_backend(env={"FLUX_NB_ENDPOINT": "http://localhost:1"}).key is None
