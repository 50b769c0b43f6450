"""The server's docs say what works: their commands parse, their settings are accepted, their code runs."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx
import pytest

from flux_nb.backend import resolve_backend
from flux_nb.server.cli import add_serve_arguments

DOCS = Path(__file__).resolve().parent.parent / "docs"


def code_blocks(page: str, language: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def section(page: str, title: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def serve_commands() -> list[str]:
    commands = []
    for page in ("local-server.md", "backends.md"):
        for block in code_blocks(page, "bash"):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip()
                if "flux-nb serve" in line:
                    commands.append(line[line.index("flux-nb serve"):])
    return commands


@pytest.mark.parametrize("command", serve_commands())
def test_documented_serve_commands_are_valid(command):
    parser = add_serve_arguments(argparse.ArgumentParser(exit_on_error=False))
    args = parser.parse_args(shlex.split(command)[2:])
    if args.engine == "diffusers":
        assert args.model, f"{command!r}: --engine diffusers needs --model"


def exported_settings(block: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)", block, flags=re.M))


@pytest.mark.parametrize("block", [b for b in code_blocks("backends.md", "bash") if "FLUX_NB_ENDPOINT" in b])
def test_documented_endpoint_settings_are_accepted(block):
    env = exported_settings(block)
    backend = resolve_backend(env=env)  # raises FluxConfigError where the client would refuse them
    assert backend.kind == "endpoint"


def test_the_fal_client_section_runs_against_the_server(live_server, monkeypatch, tmp_path):
    """The snippet of "Using the official fal_client with flux-nb serve", as written, against a live server."""
    text = section("local-server.md", "Using the official fal_client with flux-nb serve")
    named = set(re.findall(r"fal_client\.client\.([A-Z_]+) =", text))
    assert named == {"QUEUE_URL_FORMAT", "RUN_URL_FORMAT", "REST_URL", "CDN_URL"}
    server = live_server(token="the-token")
    (snippet,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = snippet.replace('"http://127.0.0.1:8765"', repr(server.url))
    for name in named:  # restored after the test: the snippet sets them for the whole process
        monkeypatch.setattr(fal_module, name, getattr(fal_module, name))
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-style.safetensors").write_bytes(b"weights")
    shared = fal_client.sync_client
    namespace: dict = {}
    try:
        exec(compile(snippet, "local-server.md", "exec"), namespace)
    finally:
        # the module's shared client caches its key and upload token: leave it as it was
        if "_client" in shared.__dict__:
            shared.__dict__.pop("_client").close()
        for cached in ("_auth", "_token_manager"):
            shared.__dict__.pop(cached, None)
    assert namespace["result"]["seed"] == 7
    assert httpx.get(namespace["result"]["images"][0]["url"]).status_code == 200
    assert httpx.get(namespace["lora_url"]).content == b"weights"
