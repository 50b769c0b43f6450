"""The one client every front end uses: fal's queue protocol over httpx.

:class:`AsyncFluxClient` does the work; :class:`FluxClient` is its sync twin, running it on
flux-nb's background loop (see :mod:`flux_nb._loop`) so it works in scripts, IPython and inside a
running Jupyter kernel alike. A generation is: submit -> follow the status stream (SSE; polling with
backoff only if the server has no stream) -> fetch the result -> download every image at once ->
persist to the local store -> return a :class:`~flux_nb.result.FluxResult`.

Retry policy (see docs/reliability.md):

- status, stream, result, cancel and image downloads are idempotent: connection errors, 408, 429
  (honouring ``Retry-After``) and 5xx are retried with bounded, jittered exponential backoff, within
  the call's deadline;
- a submit is re-sent only when it surely did not create a job: the connection was never made, or
  the server refused it (429, 503, or any error answer marked ``X-Fal-Retryable: true``). If the request went out and the
  answer was lost (dropped connection, read timeout) the job may exist, so flux-nb raises
  :class:`~flux_nb.errors.FluxAmbiguousSubmitError` instead of risking a second, billed job.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Iterator, Mapping
from urllib.parse import urlsplit

import httpx

from . import _loop
from .backend import Backend, origin, resolve_backend
from .errors import (
    FieldError,
    FluxCancelledError,
    FluxConfigError,
    FluxConnectionError,
    FluxError,
    FluxHTTPError,
    FluxInputError,
    FluxJobFailedError,
    FluxNotFoundError,
    FluxProtocolError,
    FluxTimeoutError,
    FluxValidationError,
)
from .images import MAX_IMAGE_PIXELS, download_images
from .params import APP_ID, FluxRequest
from .protocol import (
    RETRY_STATUS,
    JobHandle,
    JobStatus,
    RetryPolicy,
    error_from_response,
    parse_handle,
    parse_output,
    parse_status,
    stream_url,
    submit_url,
    with_logs,
)
from .result import FluxResult
from .session import MAX_ANSWER_BYTES, ApiSession
from .uploads import Uploader

__all__ = [
    "AsyncFluxClient",
    "FluxClient",
    "JobHandle",
    "JobStatus",
    "MAX_ANSWER_BYTES",
    "MAX_IMAGE_PIXELS",
    "get_client",
    "reset_default_client",
    "generate",
    "agenerate",
]

log = logging.getLogger("flux_nb")

StatusCallback = Callable[[JobStatus], Any]


class AsyncFluxClient:
    """Async client for ``fal-ai/flux-lora`` and fal-compatible servers.

    Args:
        endpoint: ``"fal"``, ``"embedded"``, or a server URL; None reads the environment
            (see :mod:`flux_nb.backend`).
        key: API key; None reads ``FAL_KEY`` (or ``FLUX_NB_TOKEN`` for a custom endpoint).
        timeout: overall deadline in seconds for one generation, queueing included.
        request_timeout: deadline for one HTTP call (connect + whole answer).
        retry: backoff policy for retried calls.
        transport: an httpx async transport (tests, custom networking); the embedded backend
            makes its own.
        store: where results are persisted: None for the default store, False for none.
        app_id: the fal app, ``fal-ai/flux-lora``.
        allow_insecure_http: allow a plain-http endpoint on a non-loopback host.
        announce: print the backend in use, once, when the client first connects.
        max_followed: jobs followed at once (status stream, result, image downloads). More may
            be submitted; they wait in the server's queue and are followed as others finish, so a
            big ``asyncio.gather`` keeps connections and CPU per job flat.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 900.0,
        request_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        store: Any = None,
        app_id: str = APP_ID,
        allow_insecure_http: bool = False,
        announce: bool = False,
        max_followed: int = 16,
    ):
        self.backend: Backend = resolve_backend(endpoint, key, allow_insecure_http=allow_insecure_http)
        if not isinstance(max_followed, int) or max_followed < 1:
            raise FluxConfigError(f"max_followed={max_followed!r}: must be a whole number of at least 1")
        self.app_id = app_id
        self.timeout = float(timeout)
        self.request_timeout = float(request_timeout)
        self.retry = retry or RetryPolicy()
        self.max_followed = max_followed
        self._store_option = store
        self._lifespan: Any = None
        self._session = ApiSession(
            self.backend,
            retry=self.retry,
            request_timeout=self.request_timeout,
            pool_size=max_followed * 2,
            transport=transport,
            start_transport=self._start_embedded if transport is None and self.backend.kind == "embedded" else None,
            announce=announce,
        )
        self._uploader = Uploader(self._session)
        self._follow_slots: asyncio.Semaphore | None = None
        self._submit_slots: asyncio.Semaphore | None = None

    @property
    def counters(self) -> dict[str, int]:
        """HTTP calls made, by kind (submit, status, stream, result, cancel, image, upload)."""
        return self._session.counters

    def __repr__(self) -> str:
        return f"<AsyncFluxClient {self.backend.describe()}>"

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def store(self) -> Any:
        if self._store_option is False:
            return None
        if self._store_option is not None:
            return self._store_option
        from .store import get_store

        return get_store()

    async def _start_embedded(self) -> httpx.AsyncBaseTransport:
        from ._asgi import AppLifespan, StreamingASGITransport
        from .server.app import create_app
        from .server.engines import load_engine

        app = create_app(load_engine("preview"), workers=4)
        self._lifespan = AppLifespan(app)
        await self._lifespan.startup()
        _embedded_clients.add(self)
        return StreamingASGITransport(app)

    async def aclose(self) -> None:
        """Close connections (and stop the embedded server, if this client started one)."""
        await self._session.aclose()
        if self._lifespan is not None:
            await self._lifespan.shutdown()
            self._lifespan = None

    async def __aenter__(self) -> "AsyncFluxClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else float(timeout))

    def _bounded(self, deadline: float | None, calls: int = 4) -> float:
        """The earlier of ``deadline`` and ``calls`` request timeouts from now."""
        own = self._deadline(self.request_timeout * calls)
        return own if deadline is None else min(own, deadline)

    # -- protocol operations ------------------------------------------------------------------

    async def submit(self, request: FluxRequest, *, timeout: float | None = None) -> JobHandle:
        """Queue a job; returns its handle. Local LoRA files are uploaded first."""
        request = await self._uploader.prepare(request)
        url = submit_url(self.backend.queue_url, self.app_id)
        deadline = self._deadline(timeout if timeout is not None else self.request_timeout * 4)
        if self._submit_slots is None:
            self._submit_slots = asyncio.Semaphore(self.max_followed)
        # A burst of submits beyond the pool's size would queue inside httpcore, ahead of the
        # result and image calls of jobs already done; taking turns here keeps those moving.
        async with self._submit_slots:
            response = await self._session.send(
                "POST", url, kind="submit", json_body=request.to_dict(), idempotent=False, deadline=deadline
            )
        return parse_handle(response.json("submit answer"))

    async def status(self, handle: JobHandle, *, logs: bool = True, started: float | None = None) -> JobStatus:
        """The job's current status (one GET)."""
        url = with_logs(handle.status_url) if logs else handle.status_url
        response = await self._session.send(
            "GET", url, kind="status", request_id=handle.request_id, deadline=self._deadline(self.request_timeout * 4)
        )
        elapsed = time.monotonic() - started if started else 0.0
        return parse_status(response.json("status", handle.request_id), request_id=handle.request_id, elapsed=elapsed)

    async def stream_status(
        self, handle: JobHandle, *, started: float | None = None, deadline: float | None = None
    ) -> AsyncIterator[JobStatus]:
        """Status events until the job completes: the SSE stream, or polling where there is none.

        A dropped stream is re-opened (it is idempotent); a server without the stream endpoint is
        polled with backoff from 0.2 s up to 2 s.
        """
        started = started or time.monotonic()
        deadline = deadline or self._deadline(None)
        use_stream = True
        failures = 0
        short_streams = 0
        poll_wait = 0.2
        while True:
            if time.monotonic() >= deadline:
                raise FluxTimeoutError("the job did not finish before the deadline", request_id=handle.request_id)
            if use_stream:
                try:
                    async for status in self._sse(handle, started, deadline):
                        failures = 0
                        yield status
                        if status.done:
                            return
                    # The stream ended without COMPLETED: ask once, then re-open it after a pause.
                    # A server whose streams keep ending early is polled instead, so a misbehaving
                    # server never gets a tight loop of requests.
                    status = await self.status(handle, started=started)
                    yield status
                    if status.done:
                        return
                    short_streams += 1
                    if short_streams >= 3:
                        use_stream = False
                    await asyncio.sleep(min(poll_wait, max(0.0, deadline - time.monotonic())))
                    poll_wait = min(2.0, poll_wait * 1.5)
                except FluxHTTPError as exc:
                    # No stream endpoint here: poll instead (an unknown job then fails with 404 there).
                    if exc.status_code in (404, 405, 501):
                        use_stream = False
                        continue
                    raise
                except (FluxConnectionError, FluxProtocolError):
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise
                    await asyncio.sleep(self.retry.delay(failures))
                continue
            status = await self.status(handle, started=started)
            yield status
            if status.done:
                return
            await asyncio.sleep(min(poll_wait, max(0.0, deadline - time.monotonic())))
            poll_wait = min(2.0, poll_wait * 1.5)

    async def _sse(self, handle: JobHandle, started: float, deadline: float) -> AsyncIterator[JobStatus]:
        url = stream_url(handle.status_url)
        attempt = 0
        while True:
            attempt += 1
            response = await self._session.open_stream(url, deadline, handle.request_id)
            try:
                if response.status_code != 200:
                    body = await response.aread()
                    error = error_from_response(
                        response.status_code, response.headers, body, request_id=handle.request_id,
                        what="status stream", redact=self._session.key_text(),
                    )
                    if response.status_code in RETRY_STATUS and attempt < self.retry.attempts:
                        await asyncio.sleep(self.retry.delay(attempt, getattr(error, "retry_after", None)))
                        continue
                    raise error
                async for data in _iter_sse_data(response, deadline, handle.request_id):
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise FluxProtocolError("a status event is not valid JSON", request_id=handle.request_id) from None
                    yield parse_status(payload, request_id=handle.request_id, elapsed=time.monotonic() - started)
                return
            except httpx.DecodingError as exc:
                raise FluxProtocolError(f"the status stream could not be decoded ({type(exc).__name__})", request_id=handle.request_id) from None
            except httpx.TransportError as exc:
                raise FluxConnectionError(f"status stream dropped ({type(exc).__name__})", request_id=handle.request_id) from None
            finally:
                await response.aclose()

    async def result(
        self, handle: JobHandle, request: FluxRequest | None = None, *, deadline: float | None = None
    ) -> FluxResult:
        """Fetch a completed job's output and download its images (concurrently).

        ``deadline`` (a ``time.monotonic()`` value) bounds the whole fetch, downloads included;
        a generation passes its own, so a stalled result cannot outlive the generation's timeout.
        """
        deadline = self._bounded(deadline)
        try:
            response = await self._session.send(
                "GET", handle.response_url, kind="result", request_id=handle.request_id, deadline=deadline,
            )
        except FluxHTTPError as exc:
            if exc.error_type == "request_cancelled":
                raise FluxCancelledError("the job was cancelled on the server", request_id=handle.request_id) from None
            raise
        output = parse_output(response.json("result", handle.request_id), request_id=handle.request_id)
        if request is None:
            request = FluxRequest(output.prompt or "(unknown prompt)")
        images = await download_images(self._session, output, handle.request_id, deadline)
        return FluxResult(
            images=images,
            seed=output.seed,
            request=request,
            prompt=output.prompt or request.prompt,
            has_nsfw_concepts=list(output.has_nsfw_concepts),
            timings=dict(output.timings),
            request_id=handle.request_id,
            backend=self.backend.kind,
        )

    async def cancel(self, handle: JobHandle) -> str:
        """Ask the server to cancel; returns CANCELLATION_REQUESTED, ALREADY_COMPLETED or NOT_FOUND."""
        response = await self._session.send(
            "PUT", handle.cancel_url, kind="cancel", request_id=handle.request_id,
            deadline=self._deadline(self.request_timeout), accept_status=(400, 404),
        )
        try:
            status = response.json("cancel answer", handle.request_id).get("status")
        except (FluxProtocolError, AttributeError):
            status = None
        if isinstance(status, str):
            return status
        return {400: "ALREADY_COMPLETED", 404: "NOT_FOUND"}.get(response.status_code, "CANCELLATION_REQUESTED")

    # -- the whole round trip -----------------------------------------------------------------

    async def generate(
        self,
        prompt: str | None = None,
        /,
        *,
        request: FluxRequest | None = None,
        on_status: StatusCallback | None = None,
        cache: bool = True,
        timeout: float | None = None,
        **fields: Any,
    ) -> FluxResult:
        """Generate images: submit, follow progress, fetch, download, persist, return.

        ``fields`` are request fields (aliases such as ``steps``/``guidance``/``size`` work).
        With ``cache=True`` and an explicit seed, a finished identical request is served from the
        local store without contacting the server. ``on_status`` receives every status update.
        Cancelling the awaiting task (Ctrl-C in the sync API) cancels the job on the server.
        """
        if request is None:
            request = FluxRequest(prompt, **fields)
        elif prompt is not None or fields:
            if prompt is not None:
                if "prompt" in fields:
                    raise FluxValidationError([FieldError("prompt", fields["prompt"], "given twice (positionally and as prompt=)", "duplicate")])
                fields["prompt"] = prompt
            request = request.replace(**fields)
        store = self.store
        if cache and store is not None and request.seed is not None:
            # Only results this backend made: never the preview's placeholders for fal.
            hit = await asyncio.to_thread(store.lookup, request, origin=self.origin)
            if hit is not None:
                return hit
        deadline = self._deadline(timeout)
        started = time.monotonic()
        submit_timeout = max(1.0, min(deadline - time.monotonic(), self.request_timeout * 4))
        handle = await self._submit_cancel_safely(request, submit_timeout)
        if store is not None:
            try:
                await asyncio.to_thread(_journal, store, "journal_submit", request, self._journal_info(handle))
            except asyncio.CancelledError:  # the job exists now: never leave it running unwatched
                await asyncio.shield(self._cancel_quietly(handle))
                raise
        return await self._follow(handle, request, on_status=on_status, deadline=deadline, started=started)

    async def _submit_cancel_safely(self, request: FluxRequest, timeout: float) -> JobHandle:
        """Submit; if cancelled while the submit is in flight, let it land and cancel that job.

        Abandoning the submit instead would leave a job running (and billed) with no handle to it.
        """
        task = asyncio.ensure_future(self.submit(request, timeout=timeout))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                handle = await asyncio.wait_for(task, timeout)
            except (FluxError, asyncio.TimeoutError, asyncio.CancelledError):
                raise asyncio.CancelledError() from None
            await asyncio.shield(self._cancel_quietly(handle))
            raise

    async def fetch(self, handle: JobHandle | Mapping[str, str], request: FluxRequest, *, timeout: float | None = None) -> FluxResult:
        """Finish a job submitted earlier (e.g. before a kernel restart): wait, fetch, persist.

        The handle's URLs must point at this client's own server: journal entries come from disk,
        and following them elsewhere could send the key to another host.
        """
        if not isinstance(handle, JobHandle):
            handle = JobHandle(
                request_id=handle["request_id"],
                status_url=handle["status_url"],
                response_url=handle["response_url"],
                cancel_url=handle["cancel_url"],
            )
        home = origin(self.backend.queue_url)
        for url in (handle.status_url, handle.response_url, handle.cancel_url):
            if origin(url) != home:
                raise FluxConfigError(
                    f"request {handle.request_id} belongs to another server ({urlsplit(url).netloc}); "
                    f"this client talks to {urlsplit(self.backend.queue_url).netloc}",
                    request_id=handle.request_id,
                )
        return await self._follow(handle, request, on_status=None, deadline=self._deadline(timeout), started=time.monotonic())

    async def _follow(
        self,
        handle: JobHandle,
        request: FluxRequest,
        *,
        on_status: StatusCallback | None,
        deadline: float,
        started: float,
    ) -> FluxResult:
        store = self.store
        if self._follow_slots is None:
            self._follow_slots = asyncio.Semaphore(self.max_followed)
        try:
            # Bounded: see max_followed. Waiting jobs keep their place in the server's queue.
            async with self._follow_slots:
                final: JobStatus | None = None
                async for status in self.stream_status(handle, started=started, deadline=deadline):
                    if on_status is not None:
                        _call_quietly(on_status, status)
                    final = status
                if final is not None and final.error:
                    await self._raise_job_error(handle, final)
                result = await self.result(handle, request, deadline=deadline)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_quietly(handle))
            raise
        except FluxTimeoutError:
            await asyncio.shield(self._cancel_quietly(handle))
            raise
        except (FluxJobFailedError, FluxInputError, FluxCancelledError, FluxNotFoundError):
            if store is not None:
                await asyncio.to_thread(_journal, store, "journal_done", handle.request_id)
            raise
        if store is not None:
            result = await asyncio.to_thread(_persist, store, result, self.origin)
        return result

    async def _raise_job_error(self, handle: JobHandle, status: JobStatus) -> None:
        # The result endpoint replays the model's own error (e.g. 422 naming a LoRA): prefer it.
        # One try only: a replayed 500 is the model's answer, not a passing fault.
        try:
            await self._session.send(
                "GET", handle.response_url, kind="result", request_id=handle.request_id,
                deadline=self._deadline(self.request_timeout), attempts=1,
            )
        except FluxInputError:
            raise
        except FluxError:
            pass
        if status.error_type in {"request_cancelled", "cancelled"}:
            raise FluxCancelledError("the job was cancelled on the server", request_id=handle.request_id)
        raise FluxJobFailedError(f"the job failed: {status.error}", error_type=status.error_type, request_id=handle.request_id)

    async def _cancel_quietly(self, handle: JobHandle) -> None:
        try:
            await asyncio.wait_for(self.cancel(handle), 10.0)
        except (FluxError, asyncio.TimeoutError, httpx.HTTPError):
            log.warning("could not cancel request %s on the server", handle.request_id)
        store = self.store
        if store is not None:
            await asyncio.to_thread(_journal, store, "journal_done", handle.request_id)

    def _journal_info(self, handle: JobHandle) -> dict[str, str]:
        return {**handle.to_dict(), "endpoint": self.backend.queue_url, "backend": self.backend.kind, "app_id": self.app_id}

    @property
    def origin(self) -> str:
        """Where this client's images are made, as the store's cache records it."""
        from .store import backend_origin

        return backend_origin(self.backend, self.app_id)

    async def upload_file(self, path: str | os.PathLike[str]) -> str:
        """Upload a file with fal's storage protocol; returns its URL (once per file content)."""
        return await self._uploader.upload(path)


async def _iter_sse_data(response: httpx.Response, deadline: float, request_id: str) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event (comments and keep-alives skipped)."""
    from httpx_sse import EventSource

    source = EventSource(response)
    iterator = source.aiter_sse().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FluxTimeoutError("the job did not finish before the deadline", request_id=request_id)
        try:
            event = await asyncio.wait_for(iterator.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise FluxTimeoutError("the job did not finish before the deadline", request_id=request_id) from None
        if event.data:
            yield event.data


def _call_quietly(callback: StatusCallback, status: JobStatus) -> None:
    try:
        callback(status)
    except Exception:  # a display callback must never break the generation
        log.exception("on_status callback failed")


def _journal(store: Any, method: str, *args: Any) -> None:
    try:
        getattr(store, method)(*args)
    except Exception as exc:  # the journal helps recovery; losing it must not lose the result
        log.warning("flux-nb could not update its journal: %s", exc)


def _persist(store: Any, result: FluxResult, origin: str) -> FluxResult:
    """Save before showing; on a disk error keep the in-memory result and say so once."""
    try:
        saved = store.save(result, origin=origin)
        store.journal_done(result.request_id)
        return saved
    except OSError as exc:
        import warnings

        warnings.warn(
            f"flux-nb could not save the images to its data folder ({exc}); they are kept in memory "
            "only: call result.save(folder) to keep them",
            stacklevel=2,
        )
        result.save_error = str(exc)
        return result


class FluxClient:
    """The sync client: same operations as :class:`AsyncFluxClient`, blocking.

    Work runs on flux-nb's background loop, so this works in scripts, IPython and Jupyter. Ctrl-C
    (the stop button) cancels the job on the server and re-raises KeyboardInterrupt.
    """

    def __init__(self, endpoint: str | None = None, key: str | None = None, **options: Any):
        self.aio = AsyncFluxClient(endpoint, key, **options)

    def __repr__(self) -> str:
        return f"<FluxClient {self.backend.describe()}>"

    @property
    def backend(self) -> Backend:
        return self.aio.backend

    @property
    def store(self) -> Any:
        return self.aio.store

    def generate(self, prompt: str | None = None, /, **kwargs: Any) -> FluxResult:
        """See :meth:`AsyncFluxClient.generate`."""
        return _loop.run_sync(self.aio.generate(prompt, **kwargs))

    def submit(self, request: FluxRequest, **kwargs: Any) -> JobHandle:
        return _loop.run_sync(self.aio.submit(request, **kwargs))

    def status(self, handle: JobHandle, *, logs: bool = True) -> JobStatus:
        return _loop.run_sync(self.aio.status(handle, logs=logs))

    def iter_status(self, handle: JobHandle) -> Iterator[JobStatus]:
        """Status updates until completion (blocking iterator over the stream)."""
        agen = self.aio.stream_status(handle)
        while True:
            try:
                yield _loop.run_sync(agen.__anext__())
            except StopAsyncIteration:
                return

    stream_status = iter_status

    def result(self, handle: JobHandle, request: FluxRequest | None = None, **kwargs: Any) -> FluxResult:
        return _loop.run_sync(self.aio.result(handle, request, **kwargs))

    def cancel(self, handle: JobHandle) -> str:
        return _loop.run_sync(self.aio.cancel(handle))

    def fetch(self, handle: JobHandle | Mapping[str, str], request: FluxRequest, **kwargs: Any) -> FluxResult:
        return _loop.run_sync(self.aio.fetch(handle, request, **kwargs))

    def upload_file(self, path: str | os.PathLike[str]) -> str:
        return _loop.run_sync(self.aio.upload_file(path))

    def close(self) -> None:
        _loop.run_sync(self.aio.aclose())

    def __enter__(self) -> "FluxClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_default_lock = threading.Lock()
_default: FluxClient | None = None
_default_env: tuple[str | None, ...] | None = None

_ENV_KEYS = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUX_NB_ENDPOINT", "FLUX_NB_TOKEN", "FLUX_NB_ALLOW_INSECURE_HTTP")


def get_client() -> FluxClient:
    """The process-wide client built from the environment; rebuilt if the environment changes.

    The backend in use is reported once, in one line, when the client first connects.
    """
    global _default, _default_env
    env = tuple(os.environ.get(k) for k in _ENV_KEYS)
    with _default_lock:
        if _default is None or env != _default_env:
            old = _default
            _default = FluxClient(announce=True)
            _default_env = env
            if old is not None:
                _loop.submit(old.aio.aclose())
        return _default


#: Clients running an embedded server, stopped at exit so its workers and temp files go cleanly.
_embedded_clients: "weakref.WeakSet[AsyncFluxClient]" = weakref.WeakSet()


@atexit.register
def _close_embedded_at_exit() -> None:
    loop = _loop._loop  # never start the loop just to close nothing
    if loop is None or _loop.in_loop_thread():
        return
    for client in list(_embedded_clients):
        if client._session.loop is loop:
            try:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
            except Exception:  # exiting anyway
                pass


def reset_default_client() -> None:
    """Forget the default client (after a key or endpoint change)."""
    global _default
    with _default_lock:
        old, _default = _default, None
    if old is not None:
        _loop.submit(old.aio.aclose())


def generate(prompt: str | None = None, /, **fields: Any) -> FluxResult:
    """Generate with the default client (see :func:`get_client` and :meth:`AsyncFluxClient.generate`)."""
    return get_client().generate(prompt, **fields)


async def agenerate(prompt: str | None = None, /, **fields: Any) -> FluxResult:
    """Async :func:`generate`; works with top-level ``await`` in Jupyter."""
    return await _loop.run_in_loop(get_client().aio.generate(prompt, **fields))
