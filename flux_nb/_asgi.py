"""Talk HTTP to an ASGI app in-process, with streaming: the embedded backend's transport.

httpx's own ASGITransport collects the whole response body before returning, so a Server-Sent
Events stream would arrive only after the job finished (no live queue position or logs). This
transport hands body chunks over as the app sends them and tells the app when the client hangs up.
It also drives the ASGI lifespan protocol, so the app's startup (its job workers) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

import httpx

__all__ = ["StreamingASGITransport", "AppLifespan"]

ASGIApp = Callable[..., Any]


class _AppStream(httpx.AsyncByteStream):
    def __init__(self, queue: "asyncio.Queue[bytes | None]", task: asyncio.Task, disconnected: asyncio.Event):
        self._queue = queue
        self._task = task
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                break
            yield chunk
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise httpx.RemoteProtocolError("the embedded server failed while answering")

    async def aclose(self) -> None:
        self._disconnected.set()
        if not self._task.done():
            # Give the app a moment to see the disconnect and finish on its own.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 1.0)
            if not self._task.done():
                self._task.cancel()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """An httpx transport that calls an ASGI app directly and streams its answers."""

    def __init__(self, app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 50000)):
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or (443 if request.url.scheme == "https" else 80)),
            "client": self.client,
            "root_path": "",
        }
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        started = asyncio.Event()
        disconnected = asyncio.Event()
        state: dict[str, Any] = {"body_sent": False}

        async def receive() -> dict[str, Any]:
            if not state["body_sent"]:
                state["body_sent"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = message.get("headers", [])
                started.set()
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    queue.put_nowait(chunk)
                if not message.get("more_body", False):
                    queue.put_nowait(None)

        async def run_app() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                started.set()
                queue.put_nowait(None)

        task = asyncio.get_running_loop().create_task(run_app())
        try:
            await started.wait()
        except asyncio.CancelledError:  # the caller gave up before the answer began
            disconnected.set()
            task.cancel()
            raise
        if "status" not in state:
            # The app failed before answering: surface it as a dropped connection.
            with contextlib.suppress(Exception):  # the app's own failure; a cancel of ours propagates
                await task
            raise httpx.RemoteProtocolError("the embedded server closed the connection without answering")
        return httpx.Response(
            state["status"], headers=state["headers"], stream=_AppStream(queue, task, disconnected), request=request
        )


class AppLifespan:
    """Run an ASGI app's lifespan (startup now, shutdown on :meth:`shutdown`)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def startup(self) -> None:
        async def receive() -> dict[str, Any]:
            return await self._to_app.get()

        async def send(message: dict[str, Any]) -> None:
            await self._from_app.put(message)

        async def run() -> None:
            try:
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
            except Exception:  # an app without lifespan support: nothing to run
                await self._from_app.put({"type": "lifespan.startup.complete"})

        self._task = asyncio.get_running_loop().create_task(run())
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] == "lifespan.startup.failed":
            from .errors import FluxError

            raise FluxError(f"the embedded server failed to start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._from_app.get(), 10.0)
        if not self._task.done():
            self._task.cancel()
