"""The fal-compatible HTTP app: fal's queue protocol for ``fal-ai/flux-lora`` over any engine.

Endpoints (``{app}`` is ``owner/name``, ``fal-ai/flux-lora`` unless configured otherwise)::

    POST /{app}                                   submit -> request_id, status/response/cancel URLs
    GET  /{app}/requests/{id}/status?logs=1       202 IN_QUEUE / IN_PROGRESS, 200 COMPLETED
    GET  /{app}/requests/{id}/status/stream       Server-Sent Events: one status object per change
    GET  /{app}/requests/{id}                     the output (or the failure, replayed); 400 while
                                                  still running; 404 unknown or expired
    PUT  /{app}/requests/{id}/cancel              202 CANCELLATION_REQUESTED / 400 ALREADY_COMPLETED
                                                  / 404 NOT_FOUND
    POST /run/{app}                               run and answer the output directly
    POST /storage/auth/token?storage_type=...     upload token {token, token_type, base_url, expires_at}
    POST /files/upload                            raw bytes (X-Fal-File-Name) -> {access_url}
    POST /files/upload/multipart                  big files in parts (see flux_nb.server.uploads)
    PUT  /files/uploads/.../multipart/{id}/{n}    one part -> ETag
    POST /files/uploads/.../multipart/{id}/complete
    GET  /files/{path}                            generated images and uploaded files
    GET  /health                                  engine, workers, queue length (never needs a token)
    GET  /stats                                   job and request counters

With a token, every endpoint but ``/health`` needs ``Authorization: Key <token>`` (or ``Bearer``).
File URLs the server hands out carry a signature (``?sig=``) instead, because fal's image URLs
need no auth; the upload endpoints also take the storage token from ``/storage/auth/token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import FieldError, FluxValidationError
from ..params import APP_ID, FluxRequest
from . import protocol as P
from . import uploads
from .engines.base import Engine, EngineInputError
from .faults import FaultInjector
from .jobs import ALREADY_COMPLETED, CANCEL_REQUESTED, NOT_FOUND, Job, JobQueue
from .multipart import MultipartUploads
from .stats import ServerStats
from .storage import FileStore

__all__ = ["create_app", "ServerState", "DEFAULT_MAX_BODY", "DEFAULT_MAX_UPLOAD", "DEFAULT_MAX_PIXELS"]

logger = logging.getLogger("flux_nb.server")

#: JSON bodies larger than this are refused with 413.
DEFAULT_MAX_BODY = 1024 * 1024
#: Uploaded files (LoRA weights) larger than this are refused with 413.
DEFAULT_MAX_UPLOAD = 2 * 1024**3
#: Most output pixels one job may ask for (width x height x num_images): 4 images of 2048x2048.
DEFAULT_MAX_PIXELS = 4 * 2048 * 2048


@dataclass
class ServerState:
    """Everything the handlers share; ``app.state.flux``. ``aclose()`` stops jobs and frees files."""

    engine: Engine
    jobs: JobQueue
    files: FileStore
    stats: ServerStats
    app_ids: tuple[str, ...]
    token: str | None = None
    public_url: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    sse_keepalive: float = 15.0
    multipart: MultipartUploads = field(default_factory=MultipartUploads)
    closed: bool = field(default=False)

    @property
    def storage_token(self) -> str:
        # derived, so an upload token never reveals the server token itself
        return P.sign_path(self.token or "flux-nb-local", "storage-upload-token")

    def base_url(self, request: Request) -> str:
        return (self.public_url or str(request.base_url)).rstrip("/")

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.multipart.drop()  # their parts go with the files' temporary folder
        await self.jobs.aclose()
        try:
            self.engine.close()
        finally:
            self.files.close()


def create_app(
    engine: Engine,
    *,
    workers: int = 2,
    token: str | None = None,
    latency: float = 0.0,
    fail_rate: float = 0.0,
    fault_seed: int | None = None,
    result_ttl: float = 3600.0,
    max_body: int = DEFAULT_MAX_BODY,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    public_url: str | None = None,
    app_id: str | Sequence[str] = APP_ID,
    files_dir: str | Path | None = None,
    allow_local_paths: bool = False,
    sse_keepalive: float = 15.0,
) -> Starlette:
    """A Starlette app serving fal's queue protocol for ``app_id`` with ``engine``.

    ``workers`` bounds concurrent jobs (and the engine's ``max_concurrency`` bounds it further);
    ``latency`` adds simulated seconds per image; ``fail_rate``/``fault_seed`` inject faults (see
    :mod:`flux_nb.server.faults`); finished results are kept ``result_ttl`` seconds. Files live in
    ``files_dir`` (default: a private temporary folder removed at shutdown). ``allow_local_paths``
    lets LoRA paths name files on this machine (for an in-process server only).

    The job workers start with the app's lifespan, or lazily on the first submit when the app is
    driven without one (e.g. through httpx's ASGI transport); then call
    ``await app.state.flux.aclose()`` when done.
    """
    app_ids = (app_id,) if isinstance(app_id, str) else tuple(app_id)
    for one in app_ids:
        if len(one.strip("/").split("/")) != 2:
            raise ValueError(f"app_id={one!r}: must look like 'owner/name'")
    app_ids = tuple(one.strip("/") for one in app_ids)
    if not 0.0 <= fail_rate <= 1.0:
        raise ValueError(f"fail_rate={fail_rate!r}: must be between 0 and 1")
    if workers < 1:
        raise ValueError(f"workers={workers!r}: must be at least 1")
    stats = ServerStats()
    files = FileStore(files_dir)
    state_box: dict[str, ServerState] = {}

    def resolve_file(path: str) -> Path:
        return _resolve_file(state_box["state"], path, allow_local_paths)

    jobs = JobQueue(engine, files, workers=workers, latency=latency, result_ttl=result_ttl, stats=stats, resolve_file=resolve_file)
    state = ServerState(
        engine=engine, jobs=jobs, files=files, stats=stats, app_ids=app_ids, token=token or None,
        public_url=public_url.rstrip("/") if public_url else None, max_body=max_body, max_upload=max_upload,
        max_pixels=max_pixels, sse_keepalive=sse_keepalive,
    )
    state_box["state"] = state

    def classify(method: str, path: str) -> str:
        return P.endpoint_kind(method, path, app_ids)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        jobs.start()
        try:
            yield
        finally:
            await state.aclose()

    routes = [
        Route("/health", _health, methods=["GET"]),
        Route("/stats", _stats, methods=["GET"]),
        Route("/storage/auth/token", _storage_token, methods=["POST"]),
        Route("/files/upload", uploads.upload, methods=["POST"]),
        Route("/files/upload/multipart", uploads.multipart_start, methods=["POST"]),
        Route("/files/uploads/{folder}/{name}/multipart/{upload_id}/complete", uploads.multipart_complete, methods=["POST"]),
        Route("/files/uploads/{folder}/{name}/multipart/{upload_id}/{part}", uploads.multipart_part, methods=["PUT"]),
        Route("/files/{path:path}", _file, methods=["GET"]),
        Route("/run/{owner}/{name}", _run, methods=["POST"]),
        Route("/{owner}/{name}", _submit, methods=["POST"]),
        Route("/{owner}/{name}/requests/{request_id}/status", _status, methods=["GET"]),
        Route("/{owner}/{name}/requests/{request_id}/status/stream", _stream, methods=["GET"]),
        Route("/{owner}/{name}/requests/{request_id}/cancel", _cancel, methods=["PUT"]),
        Route("/{owner}/{name}/requests/{request_id}", _result, methods=["GET"]),
    ]
    # outermost first: count every request, then maybe fault it, then check the token
    middleware = [
        Middleware(RequestCounter, stats=stats, classify=classify),
        Middleware(FaultInjector, fail_rate=fail_rate, fault_seed=fault_seed, stats=stats, classify=classify),
        Middleware(TokenAuth, state=state),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.flux = state
    return app


# -- middleware ---------------------------------------------------------------------------------


class RequestCounter:
    """Counts HTTP requests per endpoint kind for ``/stats``."""

    def __init__(self, app: Any, *, stats: ServerStats, classify: Any):
        self.app, self.stats, self.classify = app, stats, classify

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.stats.requests[self.classify(scope["method"], scope["path"])] += 1
        await self.app(scope, receive, send)


def is_authorized(state: ServerState, method: str, path: str, authorization: str | None, query: str) -> bool:
    """Whether a request may pass, given the server's token (pure; no token: everyone may)."""
    if not state.token or path == "/health":
        return True
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip().encode()
    if scheme.lower() in {"key", "bearer"} and hmac.compare_digest(value, state.token.encode()):
        return True
    if (P.is_upload_request(method, path) and scheme.lower() == "bearer"
            and hmac.compare_digest(value, state.storage_token.encode())):
        return True
    if method in {"GET", "HEAD"} and path.startswith("/files/"):
        if P.is_signed_upload_file(state.token, path):  # a multipart upload's URL: no ?sig= possible
            return True
        signature = parse_qs(query).get("sig", [None])[0]
        return P.verify_signature(state.token, path, signature)
    return False


class TokenAuth:
    """401 unless :func:`is_authorized`."""

    def __init__(self, app: Any, *, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            query = scope.get("query_string", b"").decode("latin-1")
            if not is_authorized(self.state, scope["method"], scope["path"], headers.get("authorization"), query):
                detail = "missing or wrong token: send 'Authorization: Key <token>'"
                response = _error(401, detail, P.ERROR_UNAUTHORIZED)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- helpers ------------------------------------------------------------------------------------


def _state(request: Request) -> ServerState:
    return request.app.state.flux


def _error(status: int, detail: Any, error_type: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    all_headers = dict(headers or {})
    if error_type:
        body["error_type"] = error_type
        all_headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status, headers=all_headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, headers=dict(exc.headers or {}))


def _app_id(request: Request) -> str:
    app_id = f"{request.path_params['owner']}/{request.path_params['name']}"
    if app_id not in _state(request).app_ids:
        raise HTTPException(404, f"unknown app {app_id!r}; this server serves {', '.join(_state(request).app_ids)}")
    return app_id


def _job(request: Request) -> tuple[str, Job | None]:
    app_id = _app_id(request)
    job = _state(request).jobs.get(request.path_params["request_id"])
    if job is not None and job.app_id != app_id:
        job = None
    return app_id, job


def _not_found(request_id: str) -> JSONResponse:
    return _error(404, f"Request {request_id!r} not found (unknown, or its result expired)", P.ERROR_NOT_FOUND)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"request body of {length} bytes is over this server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_response(errors: list[FieldError]) -> JSONResponse:
    return _error(422, [e.to_fal() for e in errors], P.ERROR_VALIDATION)


def check_server_limits(request: FluxRequest, max_pixels: int) -> list[FieldError]:
    """What this server refuses beyond fal's own limits: more output pixels than ``max_pixels``."""
    pixels = request.width * request.height
    if pixels > max_pixels:
        return [FieldError("image_size", request.size_label, f"{request.width}x{request.height} is over this server's limit of {max_pixels} pixels per job", "range")]
    if pixels * request.num_images > max_pixels:
        most = max(1, max_pixels // pixels)
        return [FieldError("num_images", request.num_images, f"at {request.width}x{request.height} this server makes at most {most} image(s) per job ({max_pixels} pixels)", "range")]
    return []


async def _parse_submission(request: Request) -> FluxRequest | JSONResponse:
    state = _state(request)
    raw = await _read_body(request, state.max_body)
    try:
        data = json.loads(raw or b"null")
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        return _error(422, [{"loc": ["body"], "msg": "invalid JSON: nested too deeply", "type": "json_invalid"}], P.ERROR_VALIDATION)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}], P.ERROR_VALIDATION)
    try:
        flux_request = FluxRequest.from_dict(data)
    except FluxValidationError as exc:
        return _validation_response(exc.errors)
    errors = check_server_limits(flux_request, state.max_pixels)
    if errors:
        return _validation_response(errors)
    try:
        state.engine.check(flux_request)
    except EngineInputError as exc:
        return _validation_response([FieldError(exc.field, exc.value, exc.message)])
    return flux_request


def _start_timeout(request: Request) -> float | None:
    value = request.headers.get("x-fal-request-timeout")
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds and seconds > 0 else None


async def _queue(request: Request, app_id: str) -> Job | JSONResponse:
    parsed = await _parse_submission(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    state = _state(request)
    if state.closed or not state.jobs.accepting:
        return _error(503, "the server is shutting down", "service_unavailable", {"X-Fal-Retryable": "true"})
    return await state.jobs.submit(
        parsed, app_id, priority=request.headers.get("x-fal-queue-priority", "normal"), start_timeout=_start_timeout(request)
    )


def _status_of(state: ServerState, job: Job, base_url: str, with_logs: bool) -> dict[str, Any]:
    return P.status_body(
        status=job.status,
        request_id=job.request_id,
        urls=P.job_urls(base_url, job.app_id, job.request_id),
        queue_position=state.jobs.position(job),
        logs=list(job.logs) if with_logs else None,
        inference_time=job.inference_time,
        error=job.error,
        error_type=job.error_type,
    )


def _result_response(state: ServerState, job: Job, base_url: str) -> JSONResponse:
    headers = {"X-Fal-Request-Id": job.request_id}
    if not job.done:
        return _error(400, "Request is still in progress", P.ERROR_IN_PROGRESS, headers)
    if job.outcome != "ok":
        # the job ran (or was cancelled): fetching it again replays the same answer
        headers["X-Fal-Retryable"] = "false"
        return _error(job.error_status or 500, job.error_detail, job.error_type, headers)
    images = []
    for image in job.images:
        url = P.data_uri(image.data, image.content_type) if image.data is not None else P.file_url(base_url, image.relpath or "", state.token)
        images.append({
            "url": url, "content_type": image.content_type, "width": image.width, "height": image.height,
            "file_name": image.file_name, "file_size": image.file_size,
        })
    body = P.output_body(images=images, seed=job.seed, prompt=job.request.prompt,
                         has_nsfw_concepts=job.has_nsfw_concepts, timings=job.timings)
    return JSONResponse(body, headers=headers)


# -- handlers -----------------------------------------------------------------------------------


async def _health(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({
        "status": "ok", "engine": state.engine.name, "workers": state.jobs.workers,
        "queue_length": state.jobs.queue_length, "running": state.jobs.running, "apps": list(state.app_ids),
    })


async def _stats(request: Request) -> Response:
    state = _state(request)
    return JSONResponse(state.stats.to_dict(queue_length=state.jobs.queue_length, running=state.jobs.running))


async def _submit(request: Request) -> Response:
    app_id = _app_id(request)
    job = await _queue(request, app_id)
    if isinstance(job, JSONResponse):
        return job
    state = _state(request)
    urls = P.job_urls(state.base_url(request), app_id, job.request_id)
    body = P.submit_body(job.request_id, urls, state.jobs.position(job))
    return JSONResponse(body, headers={"X-Fal-Request-Id": job.request_id})


async def _run(request: Request) -> Response:
    job = await _queue(request, _app_id(request))
    if isinstance(job, JSONResponse):
        return job
    await job.wait_done()
    state = _state(request)
    return _result_response(state, job, state.base_url(request))


async def _status(request: Request) -> Response:
    _, job = _job(request)
    if job is None:
        return _not_found(request.path_params["request_id"])
    state = _state(request)
    body = _status_of(state, job, state.base_url(request), P.parse_bool_flag(request.query_params.get("logs")))
    return JSONResponse(body, status_code=200 if job.done else 202, headers={"X-Fal-Request-Id": job.request_id})


async def _stream(request: Request) -> Response:
    _, job = _job(request)
    if job is None:
        return _not_found(request.path_params["request_id"])
    state = _state(request)
    base_url = state.base_url(request)
    with_logs = P.parse_bool_flag(request.query_params.get("logs"))

    async def events() -> AsyncIterator[bytes]:
        last = None
        while True:
            changed = job.changed()  # taken before reading, so no change slips between
            body = _status_of(state, job, base_url, with_logs)
            text = json.dumps(body, separators=(",", ":"))
            if text != last:
                yield P.sse_event(text)
                last = text
            if job.done:
                return
            try:
                await asyncio.wait_for(changed.wait(), timeout=state.sse_keepalive)
            except asyncio.TimeoutError:
                yield P.SSE_KEEPALIVE

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Fal-Request-Id": job.request_id}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _cancel(request: Request) -> Response:
    _, job = _job(request)
    state = _state(request)
    outcome = state.jobs.cancel(job.request_id) if job is not None else NOT_FOUND
    code = {CANCEL_REQUESTED: 202, ALREADY_COMPLETED: 400, NOT_FOUND: 404}[outcome]
    return JSONResponse({"status": outcome}, status_code=code)


async def _result(request: Request) -> Response:
    _, job = _job(request)
    if job is None:
        return _not_found(request.path_params["request_id"])
    state = _state(request)
    return _result_response(state, job, state.base_url(request))


async def _storage_token(request: Request) -> Response:
    state = _state(request)
    await _read_body(request, state.max_body)  # fal sends {}; nothing in it matters here
    expires = datetime.now(timezone.utc) + timedelta(hours=1)
    return JSONResponse({
        "token": state.storage_token, "token_type": "Bearer", "base_url": state.base_url(request),
        "expires_at": expires.isoformat(),
    })


async def _file(request: Request) -> Response:
    state = _state(request)
    path = state.files.resolve(request.path_params["path"])
    if path is None:
        return _error(404, "file not found", P.ERROR_NOT_FOUND)
    return FileResponse(path, media_type=state.files.content_type(path))


def _resolve_file(state: ServerState, path: str, allow_local_paths: bool) -> Path:
    """A LoRA path as sent by a client -> a file on this machine (runs in an engine thread).

    Our own file URLs map to the stored file; other http(s) URLs are downloaded once into the
    server's cache (at most ``max_upload`` bytes); local paths only with ``allow_local_paths``.
    """
    parts = urlsplit(path)
    if parts.scheme in {"http", "https"}:
        if parts.path.startswith("/files/"):
            local = state.files.resolve(unquote(parts.path[len("/files/"):]))
            if local is not None:
                return local
        return _download(state, path, allow_private=allow_local_paths)
    if allow_local_paths and not parts.scheme:
        local_path = Path(path).expanduser()
        if local_path.is_file():
            return local_path
    raise EngineInputError("loras", path, "not a file this server has; upload it with the storage protocol first")


def _refuse_private_hosts(request: Any) -> None:
    """A LoRA URL (or a redirect from it) may not reach this machine or its private network."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(request.url.host, None)
    except OSError:
        return  # the request itself will fail with a clear error
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            raise EngineInputError(
                "loras", str(request.url), "points at a private or local address; this server only fetches public URLs"
            )


def _download(state: ServerState, url: str, *, allow_private: bool = False) -> Path:
    import hashlib

    import httpx

    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    cached = state.files.cached(key)
    if cached is not None:
        return cached
    tmp_path, _ = state.files.new_upload()
    try:
        size = 0
        # Every hop, redirects included, is checked: a URL must not make the server reach its own
        # network (unless the operator allowed local sources with --allow-local-paths).
        hooks = {"request": [] if allow_private else [_refuse_private_hosts]}
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=10.0), event_hooks=hooks) as http, \
                http.stream("GET", url) as response:
            if response.status_code != 200:
                raise EngineInputError("loras", url, f"download failed: HTTP {response.status_code}")
            with open(tmp_path, "wb") as out:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > state.max_upload:
                        raise EngineInputError("loras", url, f"file is over this server's limit of {state.max_upload} bytes")
                    out.write(chunk)
        return state.files.commit_cache(tmp_path, key, urlsplit(url).path.rsplit("/", 1)[-1])
    except httpx.HTTPError as exc:
        raise EngineInputError("loras", url, f"download failed: {type(exc).__name__}") from exc
    finally:
        tmp_path.unlink(missing_ok=True)
