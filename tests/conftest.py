"""Shared fixtures: a private data folder and a clean environment for every test, live servers."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from servers import RunningServer, start_test_server

#: Environment that would point flux-nb at a real service or a real key; removed for every test.
_ENV_REMOVED = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUX_NB_ENDPOINT", "FLUX_NB_TOKEN", "FLUX_NB_NSFW_WORDS")


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A fresh FLUX_NB_DATA_DIR per test (never the user's), and no keys or endpoints in the env."""
    path = tmp_path_factory.mktemp("flux-nb-data")
    monkeypatch.setenv("FLUX_NB_DATA_DIR", str(path))
    for name in _ENV_REMOVED:
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def live_server() -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``live_server(**create_app_options)`` -> a RunningServer on a free loopback port.

    ``engine`` may be an Engine or an engine name (default ``"preview"``). Every server started
    is stopped at teardown.
    """
    started: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        server = start_test_server(**options)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
