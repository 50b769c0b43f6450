"""Odd input at the edges: endpoints, huge numbers, malformed server URLs and bodies, bad paths."""

import asyncio

import httpx
import pytest

from flux_nb.backend import resolve_backend
from flux_nb.client import FluxClient
from flux_nb.errors import FluxConfigError, FluxProtocolError, FluxValidationError
from flux_nb.params import FluxRequest
from flux_nb.protocol import parse_handle


def test_endpoint_urls_with_credentials_or_bad_ports_are_refused():
    with pytest.raises(FluxConfigError, match="user name or password"):
        resolve_backend("https://user:pw@example.com", env={})
    with pytest.raises(FluxConfigError, match="port"):
        resolve_backend("http://127.0.0.1:99999", env={})


@pytest.mark.parametrize("field", ["guidance_scale", "num_inference_steps", "seed"])
def test_numbers_too_large_for_a_float_are_validation_errors(field):
    with pytest.raises(FluxValidationError) as info:
        FluxRequest("x", **{field: 10**400})
    assert info.value.errors[0].field == field
    with pytest.raises(FluxValidationError):
        FluxRequest("x", loras=[{"path": "https://x/l.safetensors", "scale": 10**400}])


def test_server_urls_with_bad_ports_are_protocol_errors():
    answer = {"request_id": "r", "status_url": "http://h:abc/s", "response_url": "http://h/r", "cancel_url": "http://h/c"}
    with pytest.raises(FluxProtocolError, match="port"):
        parse_handle(answer)


class _BadGzip(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request):
        return httpx.Response(200, headers={"content-encoding": "gzip", "content-type": "application/json"}, content=b"not gzip")


def test_an_undecodable_answer_is_a_protocol_error():
    client = FluxClient(endpoint="http://127.0.0.1:9", store=False, transport=_BadGzip())
    with pytest.raises(FluxProtocolError, match="decoded"):
        client.generate("x", seed=1)


def test_uploading_an_unreadable_path_is_a_validation_error(tmp_path):
    client = FluxClient(endpoint="http://127.0.0.1:9", store=False)
    with pytest.raises(FluxValidationError, match="cannot be read"):
        client.upload_file(tmp_path / "nope.safetensors")


def test_the_server_does_not_fetch_lora_urls_on_private_addresses():
    from flux_nb.server.app import _refuse_private_hosts
    from flux_nb.server.engines.base import EngineInputError

    for url in ("http://127.0.0.1/x.safetensors", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.169.254/x"):
        with pytest.raises(EngineInputError, match="private or local"):
            _refuse_private_hosts(httpx.Request("GET", url))


def test_generate_cli_reports_an_unwritable_out_folder(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "a-file"
    out.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FLUX_NB_"))}
    env["FLUX_NB_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "flux_nb.cli", "generate", "x", "--seed", "1", "--size", "square",
                           "--out", str(out / "sub")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "cannot save to" in proc.stderr and "Traceback" not in proc.stderr
