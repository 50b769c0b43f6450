"""Fault injection: answer a fraction of requests with an error, reproducibly, to test clients.

:class:`FaultInjector` is a pure ASGI middleware. With probability ``fail_rate`` (drawn from a
``random.Random(fault_seed)``, so the same sequence of requests meets the same faults) a request
is answered, before it reaches the app, with one of:

- ``429`` with ``Retry-After: 0`` (error type ``rate_limited``),
- ``500`` (``internal_server_error``),
- ``503`` (``service_unavailable``),
- ``drop``, on idempotent GETs only (status, stream, result, files): the headers and part of the
  body are sent, then the connection is closed mid-answer.

Every injected answer carries ``X-Fal-Retryable: true``: a faulted request never reaches the app,
so a faulted submit never creates a job and sending it again is always safe. (A real engine error,
replayed by the result endpoint, says ``X-Fal-Retryable: false``: running it again would fail again.)
``/health`` and ``/stats`` are never faulted, so tests can always read the counters.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, Awaitable, Callable, MutableMapping

from .stats import ServerStats

__all__ = ["FaultInjector", "choose_fault", "InjectedDrop", "FAULT_KINDS"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

FAULT_KINDS = ("429", "500", "503", "drop")
_DROPPABLE = {"status", "stream", "result", "file"}
_EXEMPT = {"health", "stats"}


class InjectedDrop(Exception):
    """Raised after a partial answer so the server closes the connection (an injected fault)."""


def choose_fault(rng: random.Random, fail_rate: float, method: str, kind: str) -> str | None:
    """The fault for one request, or None. Draws from ``rng`` the same way for the same inputs."""
    if fail_rate <= 0 or kind in _EXEMPT:
        return None
    if rng.random() >= fail_rate:
        return None
    options = ["429", "500", "503"]
    if method == "GET" and kind in _DROPPABLE:
        options.append("drop")
    return rng.choice(options)


_ANSWERS = {
    "429": (429, "rate_limited", "injected fault: too many requests"),
    "500": (500, "internal_server_error", "injected fault: internal server error"),
    "503": (503, "service_unavailable", "injected fault: service unavailable"),
}


class _QuietDrops(logging.Filter):
    """Keeps the server's error log free of the tracebacks of deliberately dropped connections."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDrop)


_quiet = _QuietDrops()


class FaultInjector:
    """ASGI middleware injecting faults; ``classify(method, path)`` names the endpoint kind."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        fail_rate: float = 0.0,
        fault_seed: int | None = None,
        stats: ServerStats | None = None,
        classify: Callable[[str, str], str] = lambda method, path: "other",
    ):
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate={fail_rate!r}: must be between 0 and 1")
        self.app = app
        self.fail_rate = fail_rate
        self.rng = random.Random(fault_seed)
        self.stats = stats if stats is not None else ServerStats()
        self.classify = classify
        if fail_rate > 0:
            logging.getLogger("uvicorn.error").addFilter(_quiet)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.fail_rate <= 0:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        fault = choose_fault(self.rng, self.fail_rate, method, self.classify(method, scope["path"]))
        if fault is None:
            await self.app(scope, receive, send)
            return
        self.stats.faults[fault] += 1
        if fault == "drop":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": b'{"status": "IN_PR', "more_body": True})
            raise InjectedDrop("injected fault: connection dropped")
        status, error_type, message = _ANSWERS[fault]
        body = json.dumps({"detail": message, "error_type": error_type}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-fal-error-type", error_type.encode()),
            # always: the request never reached the app, so sending it again is safe
            (b"x-fal-retryable", b"true"),
        ]
        if fault == "429":
            headers.append((b"retry-after", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
