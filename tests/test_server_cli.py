"""``flux-nb serve``: options, the loopback rule, and a real server process."""

from __future__ import annotations

import signal

import httpx
import pytest

from flux_nb.cli import build_parser, main
from flux_nb.backend import resolve_backend
from flux_nb.errors import FluxConfigError
from flux_nb.server.cli import serve_main
from servers import APP, server_stderr, start_cli_server, stop_process, wait_status


HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "gpu.localhost", "LOCALHOST",
         "0.0.0.0", "::", "192.168.1.10", "example.com", "localhost.example.com", "gpu-box.local"]


@pytest.mark.parametrize("host", HOSTS)
def test_serve_needs_a_token_exactly_where_the_client_would_need_one(host, monkeypatch, capsys):
    """serve listens without a token only on hosts the client reaches over plain http without one."""
    import flux_nb.server as server_pkg

    def no_bind(host, port):
        raise OSError("not binding in this test")

    monkeypatch.setattr(server_pkg, "bind_socket", no_bind)  # past the token check, stop
    code = serve_main(["--host", host, "--port", "0"])
    refused = code == 2
    assert code in (1, 2)
    bare = host.strip("[]")
    url = f"http://[{bare}]:8765" if ":" in bare else f"http://{bare}:8765"
    try:
        resolve_backend(url, env={})
        client_refuses = False
    except FluxConfigError:
        client_refuses = True
    assert refused == client_refuses, (host, capsys.readouterr().err)


def test_refuses_public_host_without_token(capsys):
    assert serve_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--token" in err and "0.0.0.0" in err


def test_diffusers_needs_a_model(capsys):
    assert main(["serve", "--engine", "diffusers", "--port", "0"]) == 2
    assert "--model" in capsys.readouterr().err


def test_bad_option_values_are_usage_errors(capsys):
    for argv in (["serve", "--fail-rate", "2"], ["serve", "--workers", "0"], ["serve", "--engine", "nope"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_generate_subcommand_parses():
    args = build_parser().parse_args(["generate", "a red fox", "--seed", "7", "--out", "out", "-g", "4", "-n", "2", "--format", "png"])
    assert (args.prompt, args.seed, args.out, args.guidance, args.num_images, args.format) == ("a red fox", 7, "out", 4.0, 2, "png")


def test_serve_process_prints_url_and_serves(tmp_path):
    proc, url = start_cli_server("--workers", "1", "--token", "tok", "--latency", "0.01")
    try:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=20, headers={"Authorization": "Key tok"}) as c:
            assert c.get("/health").json()["workers"] == 1
            handle = c.post(f"/{APP}", json={"prompt": "cli", "image_size": "square"}).json()
            wait_status(c, handle["status_url"], "COMPLETED")
            assert c.get(handle["response_url"]).status_code == 200
            assert httpx.post(f"{url}/{APP}", json={"prompt": "x"}).status_code == 401
    finally:
        code = stop_process(proc, signal.SIGINT)
    assert code == 130  # Ctrl-C: a clean shutdown, the usual exit status for it
    assert "Traceback" not in server_stderr(proc)
