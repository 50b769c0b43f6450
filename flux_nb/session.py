"""One HTTP session per client: the httpx connection pool, the retry loop and bounded reads.

Every API call the client makes goes through :meth:`ApiSession.send`, which applies the retry
policy (see :mod:`flux_nb.client` for the rules), the per-call and overall deadlines, the size cap on
answers, and adds the key only for the backend's own hosts. Status streams are opened with
:meth:`ApiSession.open_stream` on the same pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import httpx

from .backend import Backend
from .errors import (
    FluxAmbiguousSubmitError,
    FluxConnectionError,
    FluxError,
    FluxProtocolError,
    FluxTimeoutError,
)
from .protocol import RETRY_STATUS, RetryPolicy, error_from_response

__all__ = ["Answer", "ApiSession", "MAX_ANSWER_BYTES"]

log = logging.getLogger("flux_nb")

#: Largest answer flux-nb reads (a result JSON with data URIs, an image): guards against hostile or
#: broken servers.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer, read within the call's deadline and size limit."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self, what: str, request_id: str | None = None) -> Any:
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError):
            raise FluxProtocolError(f"the server's {what} is not valid JSON", request_id=request_id) from None


class ApiSession:
    """The httpx client of one flux-nb client, bound to the event loop that first uses it.

    ``start_transport`` (optional) makes the transport on first use: the embedded backend starts
    its in-process server there. ``counters`` counts HTTP calls by kind.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        retry: RetryPolicy,
        request_timeout: float,
        pool_size: int,
        transport: httpx.AsyncBaseTransport | None = None,
        start_transport: Callable[[], Awaitable[httpx.AsyncBaseTransport]] | None = None,
        announce: bool = False,
    ):
        self.backend = backend
        self.retry = retry
        self.request_timeout = request_timeout
        self.pool_size = pool_size
        self._transport = transport
        self._start_transport = start_transport
        self._announce = announce
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self.counters: dict[str, int] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this session lives on, once started."""
        return self._loop

    async def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is not None:
            if self._loop is not loop:
                raise FluxError(
                    "this AsyncFluxClient is bound to another event loop; create one client per loop "
                    "(or use FluxClient / flux_nb.agenerate, which share flux-nb's own loop)"
                )
            return self._http
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._http is None:
                transport = self._transport
                if transport is None and self._start_transport is not None:
                    transport = await self._start_transport()
                # Room for every followed job's stream plus its result and image calls, all kept
                # alive: a pool that runs full queues requests, and httpcore scans that queue
                # against every connection on each event (quadratic CPU in big gathers).
                limits = httpx.Limits(
                    max_connections=self.pool_size, max_keepalive_connections=self.pool_size, keepalive_expiry=4.0
                )
                self._http = httpx.AsyncClient(
                    transport=transport,
                    limits=limits,
                    timeout=httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout)),
                    follow_redirects=False,
                    headers={"User-Agent": "flux-nb/0.1"},
                    trust_env=self.backend.kind == "fal",
                    # HTTP/2 (negotiated over TLS) multiplexes a sweep's streams on few connections.
                    http2=self.backend.queue_url.startswith("https://"),
                )
                self._loop = loop
                if self._announce:
                    print(f"flux-nb: {self.backend.describe()}", file=sys.stderr)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def key_text(self) -> str | None:
        """The key itself, only to blank it out of server answers."""
        return self.backend.key.reveal() if self.backend.key is not None else None

    def count(self, kind: str) -> None:
        self.counters[kind] = self.counters.get(kind, 0) + 1

    async def send(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        request_id: str | None = None,
        deadline: float | None = None,
        accept_status: tuple[int, ...] = (),
        attempts: int | None = None,
        attempt_timeout: float | None = None,
    ) -> Answer:
        """One API call with retries; answers 2xx (or ``accept_status``) or raises a FluxError."""
        attempts = self.retry.attempts if attempts is None else attempts
        http = await self.client()
        all_headers = dict(self.backend.auth_headers_for(url))
        all_headers.update(headers or {})
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise FluxTimeoutError(f"{kind} did not finish before the deadline", request_id=request_id)
            per_try = attempt_timeout or self.request_timeout
            limit = per_try if remaining is None else min(per_try, remaining)
            self.count(kind)
            retry_after = None
            try:
                answer = await asyncio.wait_for(self._read(http, method, url, json_body, content, all_headers), limit)
            except asyncio.TimeoutError:
                if not idempotent:
                    raise FluxAmbiguousSubmitError(
                        f"the {kind} was sent but its answer did not arrive within {limit:.1f} s; the job "
                        "may exist on the server, so it was not sent again",
                        request_id=request_id,
                    ) from None
                error: FluxError = FluxTimeoutError(
                    f"{kind} got no complete answer within {limit:.1f} s", request_id=request_id
                )
            except _CONNECT_ERRORS as exc:  # never reached the server: safe to send again
                error = FluxConnectionError(
                    f"could not connect to {urlsplit(url).netloc} ({type(exc).__name__})", request_id=request_id
                )
            except httpx.DecodingError as exc:  # the server's answer is not what it claims (e.g. bad gzip)
                raise FluxProtocolError(
                    f"the server's answer to the {kind} could not be decoded ({type(exc).__name__})", request_id=request_id
                ) from None
            except httpx.TransportError as exc:
                if not idempotent:
                    raise FluxAmbiguousSubmitError(
                        f"the connection dropped after the {kind} was sent ({type(exc).__name__}); the job "
                        "may exist on the server, so it was not sent again",
                        request_id=request_id,
                    ) from None
                error = FluxConnectionError(
                    f"the connection to {urlsplit(url).netloc} failed during {kind} ({type(exc).__name__})",
                    request_id=request_id,
                )
            else:
                if answer.status_code < 300 or answer.status_code in accept_status:
                    return answer
                if 300 <= answer.status_code < 400:
                    raise FluxProtocolError(
                        f"the server redirected the {kind} (HTTP {answer.status_code}); flux-nb does not "
                        "follow redirects on API calls",
                        request_id=request_id,
                    )
                http_error = error_from_response(
                    answer.status_code, answer.headers, answer.content, request_id=request_id,
                    what=kind, redact=self.key_text(),
                )
                if answer.status_code not in RETRY_STATUS:
                    raise http_error
                # A submit is re-sent only when the answer says the job was not taken: 429 and 503
                # refuse it outright, anything else only with X-Fal-Retryable: true (a 500/502/504
                # from a gateway may come after the job was created).
                if not idempotent and answer.status_code not in (429, 503) and http_error.retryable is not True:
                    raise http_error
                error = http_error
                retry_after = getattr(http_error, "retry_after", None)
            if attempt >= attempts:
                raise error
            delay = self.retry.delay(attempt, retry_after)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise error
            log.debug("retrying %s after %s (%.2f s)", kind, type(error).__name__, delay)
            await asyncio.sleep(delay)

    async def _read(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        json_body: Any,
        content: bytes | None,
        headers: Mapping[str, str],
    ) -> Answer:
        request = http.build_request(method, url, json=json_body, content=content, headers=headers)
        response = await http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise FluxProtocolError(f"the server's answer to {urlsplit(url).path} is larger than flux-nb accepts")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return Answer(response.status_code, response.headers, b"".join(chunks))

    async def open_stream(self, url: str, deadline: float, request_id: str) -> httpx.Response:
        """Open a Server-Sent Events stream (the caller reads and closes it)."""
        http = await self.client()
        headers = {"Accept": "text/event-stream", **self.backend.auth_headers_for(url)}
        # Read timeout above the server's 15 s keep-alive comments; the deadline bounds the rest.
        timeout = httpx.Timeout(self.request_timeout, read=max(45.0, self.request_timeout))
        self.count("stream")
        request = http.build_request("GET", url, headers=headers, timeout=timeout)
        try:
            return await asyncio.wait_for(http.send(request, stream=True), deadline - time.monotonic())
        except asyncio.TimeoutError:
            raise FluxTimeoutError("the job did not finish before the deadline", request_id=request_id) from None
        except httpx.TransportError as exc:  # includes a slow open: retried by the caller
            raise FluxConnectionError(f"status stream failed ({type(exc).__name__})", request_id=request_id) from None
