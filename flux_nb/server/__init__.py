"""The local fal-compatible server: fal's queue protocol for ``fal-ai/flux-lora`` over a local engine.

- :func:`create_app` builds the Starlette app (see :mod:`flux_nb.server.app` for the endpoints);
- :func:`start_server` runs one under uvicorn in a background thread (tests, benchmarks, notebooks);
- ``flux-nb serve`` (:mod:`flux_nb.server.cli`) runs one from the command line.

Importing this package is cheap: starlette and uvicorn load on first use.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

__all__ = ["create_app", "start_server", "RunningServer", "bind_socket"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'flux_nb.server' has no attribute {name!r}")


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; ``port=0`` picks a free one (read it back from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP; without it small answers wait ~40 ms for delayed ACKs (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class RunningServer:
    """A server running under uvicorn in a daemon thread. ``stop()`` (or leaving ``with``) ends it.

    ``url`` is its base URL (``http://127.0.0.1:PORT``), ``app`` the Starlette app, ``state`` the
    app's :class:`~flux_nb.server.app.ServerState` (jobs, stats, files).
    """

    def __init__(self, app: "Starlette", host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"):
        import uvicorn

        self.app = app
        self.host = host
        self._socket = bind_socket(host, port)
        self.port = self._socket.getsockname()[1]
        self.url = url_for(host, self.port)
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"flux-nb-server-{self.port}", daemon=True)
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> Any:
        return self.app.state.flux

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._socket])

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout: float = 20.0) -> "RunningServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server at {self.url} did not start") from self._error
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop accepting, end every job and stream, and wait for the thread (idempotent)."""
        loop = self._loop
        state = getattr(self.app.state, "flux", None)
        if self._thread.is_alive() and state is not None and loop is not None:
            # end jobs first, so open status streams finish instead of holding the shutdown
            future = asyncio.run_coroutine_threadsafe(state.jobs.aclose(), loop)
            try:
                future.result(timeout)
            except Exception:
                pass
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self._socket.close()
        except OSError:
            pass

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r})"


def start_server(app_or_options: "Starlette | dict[str, Any] | None" = None, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Run a server in a background thread and return once it accepts connections.

    ``app_or_options`` is a Starlette app, or a dict of :func:`create_app` options (with
    ``engine`` an Engine or an engine name, default ``"preview"``)::

        with start_server({"workers": 1, "latency": 0.1}) as server:
            httpx.get(server.url + "/health")
    """
    from .app import create_app

    if app_or_options is None or isinstance(app_or_options, dict):
        options = dict(app_or_options or {})
        engine = options.pop("engine", "preview")
        if isinstance(engine, str):
            from .engines import load_engine

            engine = load_engine(engine)
        app = create_app(engine, **options)
    else:
        app = app_or_options
    return RunningServer(app, host, port).start()
