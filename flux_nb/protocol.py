"""The fal queue protocol without I/O: URLs, parsing answers, classifying errors, retry timing.

Everything here is a pure function over plain data, so the client's I/O layer stays thin and these
rules are tested directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import (
    FluxAuthError,
    FluxHTTPError,
    FluxInputError,
    FluxNotFoundError,
    FluxProtocolError,
    FluxRateLimitError,
    FluxServerError,
)

__all__ = [
    "JobHandle",
    "JobStatus",
    "LogEntry",
    "ImageRef",
    "Output",
    "RetryPolicy",
    "submit_url",
    "stream_url",
    "parse_handle",
    "parse_status",
    "parse_output",
    "error_from_response",
    "retry_after_seconds",
    "decode_data_uri",
]

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
_STATUSES = {IN_QUEUE, IN_PROGRESS, COMPLETED}
#: Status codes worth another try on an idempotent call.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class JobHandle:
    """A submitted job: its id and the URLs the server gave for it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None

    def to_dict(self) -> dict[str, str]:
        return {
            "request_id": self.request_id,
            "status_url": self.status_url,
            "response_url": self.response_url,
            "cancel_url": self.cancel_url,
        }


@dataclass(frozen=True)
class LogEntry:
    message: str
    level: str = "INFO"
    timestamp: str | None = None


@dataclass(frozen=True)
class JobStatus:
    """One status report. ``elapsed`` is seconds since the client submitted the job."""

    status: str
    request_id: str
    queue_position: int | None = None
    logs: tuple[LogEntry, ...] = ()
    elapsed: float = 0.0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def done(self) -> bool:
        return self.status == COMPLETED

    def describe(self) -> str:
        """A short human line: ``queued (position 2), 1.3 s`` / ``running, 3.0 s: step 4/28``."""
        if self.status == IN_QUEUE:
            where = f" (position {self.queue_position})" if self.queue_position is not None else ""
            text = f"queued{where}"
        elif self.status == IN_PROGRESS:
            text = "running"
        else:
            text = "failed" if self.error else "done"
        text += f", {self.elapsed:.1f} s"
        if self.logs:
            text += f": {self.logs[-1].message}"
        return text


@dataclass(frozen=True)
class ImageRef:
    url: str
    content_type: str | None
    width: int | None
    height: int | None
    file_name: str | None = None


@dataclass(frozen=True)
class Output:
    images: tuple[ImageRef, ...]
    seed: int
    has_nsfw_concepts: tuple[bool, ...]
    timings: Mapping[str, Any]
    prompt: str | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff.

    ``attempts`` counts tries of one call (the first included); ``base`` and ``cap`` bound the
    delays; ``max_retry_after`` caps how long a server's ``Retry-After`` may make us wait.
    """

    attempts: int = 8
    base: float = 0.2
    cap: float = 5.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return (rng or random).uniform(ceiling / 2, ceiling)


def submit_url(queue_url: str, app_id: str) -> str:
    return f"{queue_url.rstrip('/')}/{app_id.strip('/')}"


def stream_url(status_url: str) -> str:
    """The SSE twin of a status URL (``.../status`` -> ``.../status/stream``), logs on."""
    parts = urlsplit(status_url)
    return parts._replace(path=parts.path.rstrip("/") + "/stream", query="logs=1").geturl()


def with_logs(status_url: str) -> str:
    parts = urlsplit(status_url)
    return parts._replace(query="logs=1").geturl()


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise FluxProtocolError(f"the server's {what} has no valid {key!r} (got {type(value).__name__})")
    return value


def _need_url(data: Mapping[str, Any], key: str, what: str) -> str:
    url = _need(data, key, str, what)
    parts = urlsplit(url)
    try:
        parts.port  # raises on a malformed port
    except ValueError:
        raise FluxProtocolError(f"the server's {what} gave {key}={url[:80]!r}, which has an invalid port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise FluxProtocolError(f"the server's {what} gave {key}={url[:80]!r}, which is not an http(s) URL")
    return url


def parse_handle(data: Any) -> JobHandle:
    """The submit answer -> JobHandle. Clients must follow the URLs the server returns."""
    if not isinstance(data, Mapping):
        raise FluxProtocolError("the server's submit answer is not a JSON object")
    request_id = _need(data, "request_id", str, "submit answer")
    position = data.get("queue_position")
    return JobHandle(
        request_id=request_id,
        status_url=_need_url(data, "status_url", "submit answer"),
        response_url=_need_url(data, "response_url", "submit answer"),
        cancel_url=_need_url(data, "cancel_url", "submit answer"),
        queue_position=position if isinstance(position, int) and not isinstance(position, bool) else None,
    )


def parse_status(data: Any, *, request_id: str, elapsed: float = 0.0) -> JobStatus:
    """A status object (polled or streamed) -> JobStatus."""
    if not isinstance(data, Mapping):
        raise FluxProtocolError("a status answer is not a JSON object", request_id=request_id)
    status = data.get("status")
    if status not in _STATUSES:
        raise FluxProtocolError(f"unknown job status {str(status)[:40]!r}", request_id=request_id)
    logs: list[LogEntry] = []
    raw_logs = data.get("logs")
    if isinstance(raw_logs, list):
        for entry in raw_logs:
            if isinstance(entry, Mapping) and isinstance(entry.get("message"), str):
                level = entry.get("level")
                stamp = entry.get("timestamp")
                logs.append(
                    LogEntry(
                        entry["message"],
                        level if isinstance(level, str) else "INFO",
                        stamp if isinstance(stamp, str) else None,
                    )
                )
    position = data.get("queue_position")
    metrics = data.get("metrics")
    error = data.get("error")
    error_type = data.get("error_type")
    return JobStatus(
        status=status,
        request_id=request_id,
        queue_position=position if isinstance(position, int) and not isinstance(position, bool) else None,
        logs=tuple(logs),
        elapsed=elapsed,
        metrics=metrics if isinstance(metrics, Mapping) else {},
        error=str(error) if error else None,
        error_type=error_type if isinstance(error_type, str) else None,
    )


def parse_output(data: Any, *, request_id: str | None = None) -> Output:
    """A flux-lora result body -> Output, checking every key the client relies on."""
    if not isinstance(data, Mapping):
        raise FluxProtocolError("the result is not a JSON object", request_id=request_id)
    images_raw = data.get("images")
    if not isinstance(images_raw, list) or not images_raw:
        raise FluxProtocolError("the result has no 'images' list", request_id=request_id)
    images = []
    for i, item in enumerate(images_raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            raise FluxProtocolError(f"result image {i} has no 'url'", request_id=request_id)

        def _int(key: str) -> int | None:
            value = item.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        ctype = item.get("content_type")
        name = item.get("file_name")
        images.append(
            ImageRef(
                item["url"],
                ctype if isinstance(ctype, str) else None,
                _int("width"),
                _int("height"),
                name if isinstance(name, str) else None,
            )
        )
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise FluxProtocolError("the result has no integer 'seed'", request_id=request_id)
    nsfw_raw = data.get("has_nsfw_concepts")
    nsfw = tuple(bool(x) for x in nsfw_raw) if isinstance(nsfw_raw, list) else ()
    nsfw = tuple(nsfw[i] if i < len(nsfw) else False for i in range(len(images)))
    timings = data.get("timings")
    prompt = data.get("prompt")
    return Output(
        images=tuple(images),
        seed=seed,
        has_nsfw_concepts=nsfw,
        timings=timings if isinstance(timings, Mapping) else {},
        prompt=prompt if isinstance(prompt, str) else None,
    )


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail[:300]
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item)[:100])
        return "; ".join(parts)
    if detail is None:
        return ""
    return json.dumps(detail)[:300]


def error_from_response(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id: str | None = None,
    what: str = "request",
    redact: str | None = None,
) -> FluxHTTPError:
    """The error for an HTTP error answer, chosen by status code (never by message text).

    ``redact`` (the API key) is blanked out of the body first, in case a server echoes it back.
    """
    if redact:
        body = body.replace(redact.encode(), b"****")
    detail: Any = None
    try:
        parsed = json.loads(body) if body else None
        detail = parsed.get("detail", parsed) if isinstance(parsed, Mapping) else parsed
    except (ValueError, UnicodeDecodeError):
        detail = body[:300].decode("utf-8", "replace") if body else None
    error_type = headers.get("x-fal-error-type") or None
    retryable_header = headers.get("x-fal-retryable")
    retryable = None if retryable_header is None else retryable_header.strip().lower() == "true"
    text = _detail_text(detail)
    message = f"{what} failed with HTTP {status_code}" + (f": {text}" if text else "")
    kw: dict[str, Any] = dict(
        status_code=status_code, detail=detail, error_type=error_type, retryable=retryable, request_id=request_id
    )
    if status_code in (401, 403):
        return FluxAuthError(
            f"{what} was refused (HTTP {status_code}): the key is missing or wrong"
            + (f": {text}" if text else ""),
            **kw,
        )
    if status_code == 404:
        return FluxNotFoundError(message, **kw)
    if status_code == 422:
        return FluxInputError(f"the server refused the input: {text or 'invalid request'}", **kw)
    if status_code == 429:
        return FluxRateLimitError(message, retry_after=retry_after_seconds(headers.get("retry-after")), **kw)
    if status_code >= 500:
        return FluxServerError(message, **kw)
    return FluxHTTPError(message, **kw)


def decode_data_uri(uri: str) -> tuple[bytes, str | None]:
    """``data:image/png;base64,...`` -> (bytes, content type). Raises FluxProtocolError if malformed."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:"):
        raise FluxProtocolError("malformed data URI in the result")
    meta = head[5:].split(";")
    ctype = meta[0] or None
    try:
        if "base64" in meta[1:]:
            return base64.b64decode(payload, validate=True), ctype
    except (binascii.Error, ValueError):
        raise FluxProtocolError("a data URI in the result is not valid base64") from None
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload), ctype
