"""The server's own input, beyond tests/test_server_protocol.py: hostile paths, bodies and values get a
4xx (never a 500), the token is compared in constant time, only the server's own files are served,
and the server keeps serving afterwards.
"""

from __future__ import annotations

import http.client
import inspect

import httpx
import pytest

from flux_nb.server import app as server_app
from flux_nb.server import protocol as server_protocol
from servers import APP, wait_status


def raw_request(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    """Send ``path`` exactly as written (httpx would normalise dots and percent-escapes)."""
    host, port = server.url.rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def still_serves(server, token: str | None = None) -> None:
    headers = {"Authorization": f"Key {token}"} if token else {}
    with httpx.Client(base_url=server.url, timeout=20, headers=headers) as c:
        assert c.get("/health").status_code == 200
        handle = c.post(f"/{APP}", json={"prompt": "still here", "image_size": {"width": 64, "height": 64}}).json()
        assert wait_status(c, handle["status_url"], "COMPLETED")["status"] == "COMPLETED"
        assert c.get(handle["response_url"]).status_code == 200


@pytest.fixture
def server(live_server):
    return live_server(workers=2)


REQUEST_ID_PATHS = [
    f"/{APP}/requests/..%2F..%2F..%2Fstats/status",
    f"/{APP}/requests/%2e%2e%2f%2e%2e%2fhealth/status",
    f"/{APP}/requests/..%252F..%252Fstats/status",
    f"/{APP}/requests/%00/status",
    f"/{APP}/requests/../../stats",
    f"/{APP}/requests/..%5C..%5Cstats/status/stream",
    f"/{APP}/requests/{'a' * 5000}/status",
    f"/{APP}/requests/%FF%FE/status",
    f"/{APP}/requests/x%0d%0aSet-Cookie:%20a=b/status",
]


@pytest.mark.parametrize("path", REQUEST_ID_PATHS)
def test_request_id_traversal_is_404(server, path):
    status, body = raw_request(server, "GET", path)
    assert status in (404, 405), (status, body[:200])
    assert b"jobs" not in body  # never another endpoint's answer


@pytest.mark.parametrize("path", REQUEST_ID_PATHS[:4])
def test_request_id_traversal_on_cancel_is_404(server, path):
    status, _ = raw_request(server, "PUT", path.replace("/status", "/cancel"))
    assert status == 404


FILE_PATHS = [
    "/files/results/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/uploads/..%2f..%2f..%2fetc%2fpasswd",
    "/files/results/%252e%252e/%252e%252e/etc/passwd",
    "/files//etc/passwd",
    "/files/results/%00/passwd",
    "/files/results/x/..%00/passwd",
    "/files/cache/anything",
    "/files/uploads/",
]


@pytest.mark.parametrize("path", FILE_PATHS)
def test_file_traversal_is_404(server, path):
    status, body = raw_request(server, "GET", path)
    assert status == 404 and b"root:" not in body


def test_a_link_inside_the_files_folder_does_not_reach_out(server, tmp_path):
    """Even a symlink planted among the server's results is not followed out of its folder."""
    root = server.state.files.root
    (root / "results" / "planted").mkdir(parents=True)
    (root / "results" / "planted" / "passwd.png").symlink_to("/etc/passwd")
    status, body = raw_request(server, "GET", "/files/results/planted/passwd.png")
    assert status == 404 and b"root:" not in body


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # nesting deep enough to break a recursive parser
        b'{"prompt": "' + b"\\ud800" + b'"}',  # a lone surrogate
        b'{"prompt": "x", "prompt": 5}',
        b'{"prompt": "x", "num_images": 1e999}',
        b'{"prompt": "x", "seed": 123456789012345678901234567890}',
        b"\xff\xfe{",
        b'{"prompt": NaN}',
    ],
    ids=["deep-nesting", "lone-surrogate", "duplicate-key", "float-overflow", "huge-int", "bad-utf8", "nan"],
)
def test_hostile_json_bodies_are_4xx_and_the_server_keeps_serving(server, body):
    status, answer = raw_request(server, "POST", f"/{APP}", body, {"Content-Type": "application/json"})
    assert 400 <= status < 500, (status, answer[:300])
    still_serves(server)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"num_images": 10**100}, "num_images"),
        ({"num_images": -1}, "num_images"),
        ({"image_size": {"width": 10**9, "height": 10**9}}, "image_size"),
        ({"image_size": {"width": 14142, "height": 14142}}, "image_size"),  # within fal's sides, over the server's pixels
        ({"image_size": {"width": -5, "height": 64}}, "image_size"),
        ({"num_inference_steps": 10**6}, "num_inference_steps"),
    ],
)
def test_huge_values_are_422_naming_the_field(server, fields, named):
    with httpx.Client(base_url=server.url, timeout=20) as c:
        response = c.post(f"/{APP}", json={"prompt": "x", **fields})
        assert response.status_code in (413, 422), response.text[:300]
        if response.status_code == 422:
            locs = [entry["loc"] for entry in response.json()["detail"]]
            assert any(named in map(str, loc) for loc in locs), locs
        assert c.get("/stats").json()["jobs"]["submitted"] == 0
    still_serves(server)


def test_a_lying_content_length_is_refused(server):
    status, _ = raw_request(server, "POST", f"/{APP}", b"{}", {"Content-Length": str(10**12), "Content-Type": "application/json"})
    assert status == 413
    still_serves(server)


@pytest.mark.parametrize(
    "method, path",
    [("DELETE", f"/{APP}"), ("PATCH", f"/{APP}/requests/x/status"), ("PUT", "/files/results/x.png"),
     ("POST", "/files/results/x.png"), ("DELETE", "/stats"), ("TRACE", "/health"),
     ("POST", f"/{APP}/requests/x/cancel")],
)
def test_other_wrong_methods_are_405(server, method, path):
    status, body = raw_request(server, method, path)
    assert status == 405, body[:200]


def test_the_token_is_compared_in_constant_time():
    source = inspect.getsource(server_app.is_authorized)
    assert source.count("hmac.compare_digest") >= 2
    assert "== state.token" not in source and "state.token ==" not in source
    assert "hmac.compare_digest" in inspect.getsource(server_protocol.verify_signature)


def test_files_need_their_signature_when_the_server_has_a_token(live_server):
    server = live_server(token="server-token-123")
    auth = {"Authorization": "Key server-token-123"}
    with httpx.Client(base_url=server.url, timeout=20) as c:
        handle = c.post(f"/{APP}", json={"prompt": "signed", "image_size": {"width": 64, "height": 64}}, headers=auth).json()
        wait_status(httpx.Client(timeout=20, headers=auth), handle["status_url"], "COMPLETED")
        url = c.get(handle["response_url"], headers=auth).json()["images"][0]["url"]
        assert "?sig=" in url
        assert c.get(url).status_code == 200  # the signed URL needs no token, like fal's
        bare = url.split("?", 1)[0]
        assert c.get(bare).status_code == 401
        assert c.get(bare + "?sig=" + "0" * 32).status_code == 401
        other = c.post(f"/{APP}", json={"prompt": "other", "image_size": {"width": 64, "height": 64}}, headers=auth).json()
        wait_status(httpx.Client(timeout=20, headers=auth), other["status_url"], "COMPLETED")
        other_url = c.get(other["response_url"], headers=auth).json()["images"][0]["url"]
        # one file's signature does not open another file
        assert c.get(other_url.split("?", 1)[0] + "?" + url.split("?", 1)[1]).status_code == 401
        assert c.get("/stats").status_code == 401 and c.get("/health").status_code == 200
    # signatures that are not hex, or not ASCII, are refused like any wrong one (not a 500)
    for sig in ("%C3%A9%C3%A9", "%00", "x" * 5000):
        status, _ = raw_request(server, "GET", bare.split(server.url, 1)[1] + "?sig=" + sig)
        assert status == 401
    still_serves(server, token="server-token-123")


def test_wrong_tokens_of_every_shape_are_401(live_server):
    server = live_server(token="right")
    for header in ("Key wrong", "Bearer wrong", "Key ", "Key", "right", "Basic cmlnaHQ=", "Key right extra",
                   "Key " + "é" * 10, "Key " + "x" * 10_000):
        status, body = raw_request(server, "GET", "/stats", headers={"Authorization": header.encode("utf-8")})
        assert status == 401, header
        assert b"right" not in body
    still_serves(server, token="right")
