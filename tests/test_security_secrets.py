"""The API key stays secret: never shown, logged, saved or sent anywhere but the configured hosts.

A distinctive key is used everywhere, against a real local server that requires it as its token,
and then searched for in every repr, exception, traceback, log record, saved file and byte of the
data folder (the SQLite history included).
"""

from __future__ import annotations

import logging
import os
import pickle
import traceback
from pathlib import Path

import pytest

import flux_nb
import flux_nb.store
from flux_nb import backend as backend_module
from flux_nb.backend import Secret, clear_session_key, resolve_backend
from flux_nb.client import FluxClient, get_client, reset_default_client
from flux_nb.errors import FluxAuthError, FluxConfigError, FluxError, FluxInputError
from flux_nb.protocol import RetryPolicy
from hostile import HostileServer, fal_output, json_reply
from servers import start_cli_server, stop_process

KEY = "fluxnb-SECRET-5c1e9a7d3b-KEY"


def assert_no_key(text: str | bytes, where: str) -> None:
    needle = KEY.encode() if isinstance(text, bytes) else KEY
    assert needle not in text, f"the key appears in {where}"


def scan_folder(folder: Path) -> int:
    """Every byte of every file below ``folder``; returns how many files were read."""
    count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            assert_no_key(path.read_bytes(), str(path))
            assert_no_key(str(path), "a file name")
            count += 1
    return count


@pytest.fixture(autouse=True)
def no_session_key():
    yield
    clear_session_key()
    reset_default_client()


def test_key_never_appears_in_reprs_errors_logs_files_or_history(live_server, data_dir, tmp_path, caplog):
    server = live_server(token=KEY, max_pixels=512 * 512)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "flux_nb", "flux_nb.server", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)

    client = FluxClient(endpoint=server.url, key=KEY)
    texts = [repr(client), str(client), repr(client.aio), repr(client.backend), str(client.backend),
             client.backend.describe(), repr(client.backend.key), f"{client.backend.key}", str(vars(client.backend))]
    result = client.generate("a secret garden", seed=3, image_size="square", output_format="png")
    texts += [repr(result), str(result), repr(result.images), repr(result.request), str(vars(result))]
    bundle = result._repr_mimebundle_()
    texts += [str(v) for v in bundle.values()]

    errors: list[BaseException] = []
    for call in (
        lambda: client.generate("too big", seed=1, image_size="square_hd"),  # 422 from the server
        lambda: client.generate("bad", num_images=9),  # refused before sending
        lambda: FluxClient(endpoint=server.url, key=KEY + "-wrong", store=False).generate("x", seed=1),  # 401
        lambda: FluxClient(endpoint=server.url.replace("127.0.0.1", "127.0.0.2") + "/nothing-here", key=KEY, store=False,
                           retry=RetryPolicy(attempts=1)).generate("x", seed=1),
    ):
        with pytest.raises(FluxError) as info:
            call()
        errors.append(info.value)
    assert any(isinstance(e, FluxInputError) for e in errors) and any(isinstance(e, FluxAuthError) for e in errors)
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error)), repr(vars(error))]
    for text in texts:
        assert_no_key(text, f"a repr/str/traceback: {text[:80]!r}")

    saved = result.save(tmp_path / "saved")
    assert saved and scan_folder(tmp_path / "saved") == len(saved)
    from flux_nb.metadata import read_info

    info = read_info(saved[0])
    assert_no_key(repr(info), "the embedded metadata")

    history = flux_nb.store.get_store().history(limit=None)
    assert history, "the history was written: the check would prove nothing"
    assert_no_key(repr(history), "the history entries")
    client.close()
    files = scan_folder(data_dir)
    assert files >= 2  # the images and the SQLite index were really written and read
    assert any(p.name.startswith("flux.sqlite3") for p in data_dir.rglob("*"))

    records = caplog.records
    assert records, "DEBUG logging captured nothing: the check would prove nothing"
    for record in records:
        assert_no_key(record.getMessage(), f"a log record of {record.name}")
        assert_no_key(repr(record.args), f"log arguments of {record.name}")
        if record.exc_info:
            assert_no_key("".join(traceback.format_exception(*record.exc_info)), "a logged traceback")


def test_secret_cannot_be_pickled_or_formatted():
    secret = Secret(KEY)
    assert secret == Secret(KEY)
    assert_no_key(repr(secret) + str(secret) + f"{secret}" + f"{secret!r}" + "%s" % secret, "a Secret's text")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(resolve_backend("fal", KEY))


def test_the_key_goes_only_to_the_api_host_never_to_image_hosts(data_dir):
    with HostileServer() as api, HostileServer() as cdn:
        api.route("GET", "/fal-ai/flux-lora/requests/*", json_reply(lambda s: fal_output([cdn.url + "/files/image.png"])))
        client = FluxClient(endpoint=api.url, key=KEY, store=False)
        client.generate("x", seed=1, image_size="square")
        client.close()
        assert api.requests and all(r.headers.get("authorization") == f"Key {KEY}" for r in api.requests)
        assert cdn.requests and all("authorization" not in r.headers for r in cdn.requests)
        assert not any(KEY in repr(r) for r in cdn.requests)


def test_redirects_never_carry_the_key_to_another_host(data_dir):
    from hostile import redirect

    with HostileServer() as api, HostileServer() as elsewhere:
        api.route("GET", "/files/*", redirect(lambda s: elsewhere.url + "/files/image.png", status=307))
        api.route("GET", "/fal-ai/flux-lora/requests/*/status/stream", redirect(lambda s: elsewhere.url + "/stream"))
        client = FluxClient(endpoint=api.url, key=KEY, store=False, retry=RetryPolicy(attempts=2, base=0.01))
        with pytest.raises(FluxError):
            client.generate("x", seed=1, image_size="square")
        client.close()
        assert all("authorization" not in r.headers for r in elsewhere.requests)
        assert elsewhere.requests == []  # not even followed


def test_a_fal_key_is_not_sent_to_a_custom_endpoint(monkeypatch, data_dir):
    with HostileServer() as other:
        monkeypatch.setenv("FAL_KEY", KEY)
        monkeypatch.setenv("FLUX_NB_ENDPOINT", other.url)
        reset_default_client()
        flux_nb.generate("x", seed=1, image_size="square")
        assert other.requests
        assert all(KEY not in r.headers.get("authorization", "") for r in other.requests)
        reset_default_client()


@pytest.mark.parametrize("url", ["http://example.com:8765", "http://10.1.2.3", "http://[2001:db8::1]:80", "http://localhost.evil.com"])
def test_plain_http_to_a_remote_host_is_refused_unless_allowed(url, monkeypatch):
    with pytest.raises(FluxConfigError) as info:
        FluxClient(endpoint=url, key=KEY)
    assert "allow_insecure_http" in str(info.value)
    assert_no_key(str(info.value), "the config error")
    assert FluxClient(endpoint=url, key=KEY, allow_insecure_http=True).backend.kind == "endpoint"
    monkeypatch.setenv("FLUX_NB_ALLOW_INSECURE_HTTP", "1")
    assert FluxClient(endpoint=url, key=KEY).backend.kind == "endpoint"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:1", "http://[::1]:9", "https://flux.example.com"])
def test_loopback_http_and_any_https_are_accepted(url):
    assert FluxClient(endpoint=url, key=KEY).backend.kind == "endpoint"


def test_malformed_endpoints_and_fal_without_a_key_are_config_errors():
    for bad in ("ftp://x", "nonsense", "http://", "http://127.0.0.1?x=1"):
        with pytest.raises(FluxConfigError):
            resolve_backend(bad, env={})
    with pytest.raises(FluxConfigError):
        resolve_backend("fal", env={})


def test_fal_backend_uses_https_hosts_only():
    backend = resolve_backend("fal", KEY)
    assert all(scheme == "https" for scheme, _host, _port in backend.api_hosts)
    assert backend.auth_headers_for("https://queue.fal.run/fal-ai/flux-lora") == {"Authorization": f"Key {KEY}"}
    for url in ("http://queue.fal.run/x", "https://queue.fal.run.evil.com/x", "https://v3.fal.media/files/x.png",
                "https://queue.fal.run:444/x", "https://evil.com/?https://queue.fal.run"):
        assert backend.auth_headers_for(url) == {}, url


def test_login_keeps_the_key_in_memory_only(monkeypatch, data_dir):
    monkeypatch.setattr("getpass.getpass", lambda prompt="": KEY)
    flux_nb.login()
    client = get_client()
    assert client.backend.kind == "fal" and client.backend.key.reveal() == KEY
    assert KEY not in os.environ.values()  # not in the environment (which child processes inherit)
    assert_no_key(repr(client) + client.backend.describe(), "the client's description")
    assert not any(data_dir.iterdir())  # and not on disk
    clear_session_key()
    assert get_client().backend.kind == "embedded"


def test_magic_login_keeps_the_key_in_memory_only(monkeypatch, data_dir, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setattr("getpass.getpass", lambda prompt="": KEY)
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "flux_nb")
        shell.run_line_magic("flux", "login")
    finally:
        InteractiveShell.clear_instance()
    out = capsys.readouterr()
    assert_no_key(out.out + out.err, "the magic's output")
    assert KEY not in os.environ.values()
    assert backend_module._session_key is not None and backend_module._session_key.reveal() == KEY
    assert get_client().backend.kind == "fal"
    assert not any(data_dir.iterdir())


def test_flux_nb_serve_listens_on_loopback_by_default_and_refuses_public_without_token(capsys):
    from flux_nb.server.cli import serve_main

    proc, url = start_cli_server()
    try:
        assert url.startswith("http://127.0.0.1:")
    finally:
        stop_process(proc)
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        assert serve_main(["--host", host, "--port", "0"]) == 2
        assert "--token" in capsys.readouterr().err
