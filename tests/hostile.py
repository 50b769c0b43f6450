"""A tiny hostile fal-compatible server: real loopback TCP, answers scripted per test.

It speaks just enough HTTP/1.1 (one request per connection, ``Connection: close``) to play fal's
queue protocol, and lets a test replace any answer with something a real server should never send:
broken JSON, a stalled connection, one byte a second, a late answer, a redirect, a huge body.
Every request is recorded (method, path, headers, body) so tests can check what the client sent.

    with HostileServer() as server:
        server.route("POST", "/fal-ai/flux-lora", late(seconds=3))   # job created, answer late
        client = FluxClient(endpoint=server.url, ...)
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import random
import re
import struct
import threading
import zlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

__all__ = [
    "HostileServer",
    "Recorded",
    "Reply",
    "png_bytes",
    "png_bomb",
    "json_reply",
    "raw",
    "silent",
    "trickle",
    "late",
    "drop",
    "redirect",
    "fal_output",
]

APP = "fal-ai/flux-lora"


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Writer = asyncio.StreamWriter
# A handler gets the request and the server; it returns a Reply, or writes to the connection itself
# (and returns None).
Handler = Callable[[Recorded, "HostileServer", Writer], Awaitable["Reply | None"]]

_REASONS = {200: "OK", 202: "Accepted", 301: "Moved", 302: "Found", 307: "Temporary Redirect", 400: "Bad Request",
            404: "Not Found", 500: "Internal Server Error"}


def _head(status: int, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    all_headers = {"Connection": "close", **headers}
    if length is not None:
        all_headers.setdefault("Content-Length", str(length))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- images -------------------------------------------------------------------------------------


def png_bytes(width: int = 64, height: int = 64, *, noise: bool = False) -> bytes:
    """A real, valid PNG: flat red, or random pixels (so that any cut loses pixel data)."""
    from PIL import Image

    if noise:
        image = Image.frombytes("RGB", (width, height), random.Random(width * height).randbytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (200, 30, 30))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=2)
def png_bomb(width: int = 50000, height: int = 50000) -> bytes:
    """A real PNG of ``width`` x ``height`` black pixels, a few MB thanks to zlib.

    Deflate forgets everything at a full flush, so a block of rows compresses to the same bytes
    every time: the stream is that block repeated, with the Adler-32 of the whole image at the
    end. Making it never holds the decoded image.
    """
    rows_per_block = 1000
    if height % rows_per_block:
        raise ValueError("height must be a multiple of 1000")
    block = (b"\x00" * (width + 1)) * rows_per_block  # filter byte + greyscale pixels, per row
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)[:-4]  # the final empty block, without its checksum
    checksum = 1
    for _ in range(height // rows_per_block):
        checksum = zlib.adler32(block, checksum)
    data = first + again * (height // rows_per_block - 1) + tail + struct.pack(">I", checksum)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# -- canned behaviours --------------------------------------------------------------------------


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """Answer ``body`` as JSON (``body`` may be a function of the server, for URLs)."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
        value = body(server) if callable(body) else body
        return Reply(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    return handler


def raw(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """Answer exactly these bytes."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
        return Reply(status, body, dict(headers or {}))

    return handler


def silent() -> Handler:
    """Read the request, then never answer (until the server stops)."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> None:
        await server.stopping.wait()

    return handler


def trickle(body: bytes = b'{"status": "IN_QUEUE", "request_id": "x"}', interval: float = 1.0, status: int = 200) -> Handler:
    """Send headers, then the body one byte every ``interval`` seconds."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> None:
        writer.write(_head(status, {"Content-Type": "application/json"}, len(body)))
        await writer.drain()
        for i in range(len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            try:
                await asyncio.wait_for(server.stopping.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass

    return handler


def late(inner: Handler, seconds: float) -> Handler:
    """Run ``inner`` now (e.g. create the job), but send its answer ``seconds`` later."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> Reply | None:
        reply = await inner(req, server, writer)
        try:
            await asyncio.wait_for(server.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        return reply

    return handler


def drop(partial: bytes = b'{"request_id": "') -> Handler:
    """Send headers and part of the body, then close the connection."""

    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> None:
        writer.write(_head(200, {"Content-Type": "application/json"}, len(partial) + 100) + partial)
        await writer.drain()

    return handler


def redirect(location: str | Callable[["HostileServer"], str], status: int = 302) -> Handler:
    async def handler(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
        target = location(server) if callable(location) else location
        return Reply(status, b"", {"Location": target})

    return handler


def fal_output(image_urls: list[str], seed: int = 42, **extra: Any) -> dict[str, Any]:
    """A flux-lora result body."""
    body = {
        "images": [{"url": u, "content_type": "image/png", "width": 64, "height": 64} for u in image_urls],
        "seed": seed,
        "has_nsfw_concepts": [False] * len(image_urls),
        "timings": {"inference": 0.01},
        "prompt": "hostile",
    }
    body.update(extra)
    return body


# -- the server ---------------------------------------------------------------------------------


class HostileServer:
    """A scripted fal-like server on a free loopback port, running its own loop in a thread.

    By default it behaves like a well-formed fal server with one job: submit answers a handle,
    the status stream says COMPLETED, the result lists one image at ``/files/image.png``, which is
    a valid 64x64 PNG. ``route(method, path, handler)`` replaces any answer; ``*`` matches
    within one path segment (``/files/*``). ``jobs_created`` counts submits that reached the (default) submit handler.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.jobs_created = 0
        self.stopping = asyncio.Event()
        self._routes: list[tuple[str, str, Handler]] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-server", daemon=True)
        self.port = 0
        self.image = png_bytes()
        self.request_id = str(uuid.uuid4())
        self._install_defaults()

    # -- URLs ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def job_url(self) -> str:
        return f"{self.url}/{APP}/requests/{self.request_id}"

    def handle_body(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": "IN_QUEUE",
            "queue_position": 0,
            "status_url": self.job_url + "/status",
            "response_url": self.job_url,
            "cancel_url": self.job_url + "/cancel",
        }

    def completed_body(self) -> dict[str, Any]:
        return {"status": "COMPLETED", "request_id": self.request_id, "queue_position": None, "logs": [],
                "response_url": self.job_url}

    # -- scripting ----------------------------------------------------------------------------

    def _install_defaults(self) -> None:
        async def submit(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
            server.jobs_created += 1
            return Reply(200, json.dumps(server.handle_body()).encode(), {"Content-Type": "application/json"})

        async def stream(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
            event = b"data: " + json.dumps(server.completed_body()).encode() + b"\n\n"
            return Reply(200, event, {"Content-Type": "text/event-stream"})

        async def cancel(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
            return Reply(202, b'{"status": "CANCELLATION_REQUESTED"}', {"Content-Type": "application/json"})

        async def image(req: Recorded, server: "HostileServer", writer: Writer) -> Reply:
            return Reply(200, server.image, {"Content-Type": "image/png"})

        self.route("POST", f"/{APP}", submit)
        self.route("GET", "/health", json_reply({"status": "ok"}))
        self.route("GET", f"/{APP}/requests/*/status/stream", stream)
        self.route("GET", f"/{APP}/requests/*/status", json_reply(lambda s: s.completed_body()))
        self.route("PUT", f"/{APP}/requests/*/cancel", cancel)
        self.route("GET", f"/{APP}/requests/*", json_reply(lambda s: fal_output([s.url + "/files/image.png"])))
        self.route("GET", "/files/*", image)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` with ``handler`` (latest route wins; ``*`` matches within a segment)."""
        self._routes.insert(0, (method, path, handler))

    def _match(self, method: str, path: str) -> Handler | None:
        for m, pattern, handler in self._routes:
            regex = "[^/]*".join(re.escape(part) for part in pattern.split("*"))
            if m == method and re.fullmatch(regex, path):
                return handler
        return None

    def seen(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    @property
    def cancels(self) -> int:
        return len([r for r in self.requests if r.method == "PUT" and r.path.endswith("/cancel")])

    # -- serving ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            req = Recorded(method, target, headers, body)
            self.requests.append(req)
            path = target.split("?", 1)[0]
            handler = self._match(method, path) or raw(b'{"detail": "no route"}', 404)
            reply = await handler(req, self, writer)
            if reply is not None:
                writer.write(_head(reply.status, reply.headers, len(reply.body)) + reply.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:  # loop closing
                pass

    def start(self) -> "HostileServer":
        self._thread.start()

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(open_server(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            self.stopping.set()
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0.05)  # let handlers see ``stopping`` and end
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> "HostileServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
