"""Pure functions of the server side of fal's queue protocol: URLs, status bodies, output bodies.

Nothing here does I/O, so every answer the server gives can be checked without a server.

Decisions where fal documents nothing (the client relies on these):

- A cancelled job ends ``COMPLETED`` with ``error_type`` :data:`ERROR_CANCELLED`; fetching its
  result answers 400 with the same ``error_type`` in the body and the ``X-Fal-Error-Type`` header.
- Fetching the result of a job still queued or running answers 400, ``error_type``
  :data:`ERROR_IN_PROGRESS`; an unknown or purged id answers 404.
- A job that failed in the model replays the model's answer: 422 with a fal ``detail`` list for input
  the engine refused (:data:`ERROR_VALIDATION`), 500 for a crash (:data:`ERROR_INTERNAL`), 504 when
  ``X-Fal-Request-Timeout`` passed before the job started (:data:`ERROR_START_TIMEOUT`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence
from urllib.parse import quote

__all__ = [
    "IN_QUEUE",
    "IN_PROGRESS",
    "COMPLETED",
    "ERROR_CANCELLED",
    "ERROR_IN_PROGRESS",
    "ERROR_VALIDATION",
    "ERROR_INTERNAL",
    "ERROR_START_TIMEOUT",
    "ERROR_NOT_FOUND",
    "ERROR_UNAUTHORIZED",
    "LogEntry",
    "JobUrls",
    "job_urls",
    "is_upload_request",
    "upload_folder",
    "is_signed_upload_file",
    "status_body",
    "output_body",
    "submit_body",
    "parse_bool_flag",
    "endpoint_kind",
    "sign_path",
    "verify_signature",
    "file_url",
    "data_uri",
    "sse_event",
    "SSE_KEEPALIVE",
    "iso_now",
]

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"

ERROR_CANCELLED = "request_cancelled"
ERROR_IN_PROGRESS = "request_in_progress"
ERROR_VALIDATION = "validation_error"
ERROR_INTERNAL = "internal_server_error"
ERROR_START_TIMEOUT = "request_timeout"
ERROR_NOT_FOUND = "not_found"
ERROR_UNAUTHORIZED = "unauthorized"

#: An SSE comment line: keeps proxies and clients from timing out an idle stream.
SSE_KEEPALIVE = b": keep-alive\n\n"


def iso_now() -> str:
    """The current UTC time as fal writes timestamps (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class LogEntry:
    """One line of a job's logs, as fal sends it."""

    message: str
    level: str = "INFO"
    source: str = "USER"
    timestamp: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"message": self.message, "level": self.level, "source": self.source, "timestamp": self.timestamp}


@dataclass(frozen=True)
class JobUrls:
    status_url: str
    response_url: str
    cancel_url: str


def job_urls(base_url: str, app_id: str, request_id: str) -> JobUrls:
    """Absolute URLs of a job, as fal returns them on submit."""
    response_url = f"{base_url.rstrip('/')}/{app_id.strip('/')}/requests/{request_id}"
    return JobUrls(status_url=response_url + "/status", response_url=response_url, cancel_url=response_url + "/cancel")


def submit_body(request_id: str, urls: JobUrls, queue_position: int | None) -> dict[str, Any]:
    """The answer to a submit: the id, the URLs to follow and the place in the queue."""
    return {
        "status": IN_QUEUE,
        "request_id": request_id,
        "queue_position": queue_position if queue_position is not None else 0,
        "status_url": urls.status_url,
        "response_url": urls.response_url,
        "cancel_url": urls.cancel_url,
    }


def status_body(
    *,
    status: str,
    request_id: str,
    urls: JobUrls,
    queue_position: int | None,
    logs: Sequence[LogEntry] | None,
    inference_time: float | None = None,
    error: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """A status object (for polling and for each SSE event).

    ``queue_position`` is sent only while queued (null otherwise); ``logs`` is null unless the
    caller asked for them; ``metrics`` only once completed; ``error``/``error_type`` only on failure.
    """
    body: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "queue_position": queue_position if status == IN_QUEUE else None,
        "logs": [entry.to_dict() for entry in logs] if logs is not None else None,
        "response_url": urls.response_url,
        "status_url": urls.status_url,
        "cancel_url": urls.cancel_url,
    }
    if status == COMPLETED:
        body["metrics"] = {"inference_time": inference_time} if inference_time is not None else {}
        if error is not None:
            body["error"] = error
            body["error_type"] = error_type
    return body


def output_body(
    *,
    images: Sequence[Mapping[str, Any]],
    seed: int,
    prompt: str,
    has_nsfw_concepts: Sequence[bool],
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """fal-ai/flux-lora's output JSON. ``images`` entries already carry their final ``url``."""
    return {
        "images": [dict(image) for image in images],
        "timings": dict(timings),
        "seed": seed,
        "has_nsfw_concepts": list(has_nsfw_concepts),
        "prompt": prompt,
    }


def parse_bool_flag(value: str | None) -> bool:
    """A query flag such as ``logs``: ``1``/``true``/``yes``/``on`` are true; absent or anything else is false."""
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def endpoint_kind(method: str, path: str, app_ids: Sequence[str]) -> str:
    """Which kind of endpoint a request is for, for /stats and fault injection.

    One of ``submit``, ``run``, ``status``, ``stream``, ``result``, ``cancel``, ``file``, ``upload``,
    ``token``, ``health``, ``stats``, ``other``.
    """
    path = "/" + path.strip("/")
    if path == "/health":
        return "health"
    if path == "/stats":
        return "stats"
    if path.startswith("/storage/"):
        return "token"
    if is_upload_request(method, path):
        return "upload"
    if path.startswith("/files/"):
        return "file"
    for app_id in app_ids:
        prefix = "/" + app_id.strip("/")
        if path == "/run" + prefix:
            return "run"
        if path == prefix:
            return "submit"
        if path.startswith(prefix + "/requests/"):
            rest = path[len(prefix + "/requests/") :].split("/")
            if len(rest) == 1:
                return "result"
            if rest[1:] == ["status"]:
                return "status"
            if rest[1:] == ["status", "stream"]:
                return "stream"
            if rest[1:] == ["cancel"]:
                return "cancel"
    return "other"


def sign_path(secret: str, path: str) -> str:
    """A signature that lets a file URL be fetched without the token (fal's image URLs need none)."""
    return hmac.new(secret.encode(), path.encode(), hashlib.sha256).hexdigest()[:32]


def verify_signature(secret: str, path: str, signature: str | None) -> bool:
    # bytes, because compare_digest refuses non-ASCII str (a hostile ?sig= would be a 500)
    return signature is not None and hmac.compare_digest(
        sign_path(secret, path).encode(), signature.encode("utf-8", "surrogateescape")
    )


#: ``/files/uploads/<folder>/<name>/multipart/<upload id>/<part number | complete>``
_MULTIPART = re.compile(r"/files/uploads/[^/]+/[^/]+/multipart/[^/]+/([^/]+)")


def is_upload_request(method: str, path: str) -> bool:
    """Whether a request is a step of an upload: the storage token opens exactly these.

    One-shot ``POST /files/upload``; multipart: ``POST /files/upload/multipart`` (start), then
    ``PUT <access_url>/multipart/<id>/<part>`` and ``POST <access_url>/multipart/<id>/complete``.
    """
    if method == "POST" and path in ("/files/upload", "/files/upload/multipart"):
        return True
    match = _MULTIPART.fullmatch(path)
    if match is None:
        return False
    return method == "POST" if match[1] == "complete" else method == "PUT"


def upload_folder(secret: str, nonce: str) -> str:
    """The folder of a multipart upload: ``nonce`` and its signature, 32 hex digits.

    fal_client appends paths to a multipart upload's URL, so that URL cannot end in ``?sig=``;
    the signature lives in the folder's name instead, and :func:`is_signed_upload_file` checks it.
    """
    return nonce + sign_path(secret, "upload-folder/" + nonce)[:16]


def is_signed_upload_file(secret: str, path: str) -> bool:
    """Whether ``path`` is ``/files/uploads/<folder>/<name>`` with a folder from :func:`upload_folder`."""
    parts = path.split("/")
    if len(parts) != 5 or parts[:3] != ["", "files", "uploads"] or len(parts[3]) != 32 or not parts[4]:
        return False
    nonce, signature = parts[3][:16], parts[3][16:]
    return hmac.compare_digest(
        sign_path(secret, "upload-folder/" + nonce)[:16].encode(), signature.encode("utf-8", "surrogateescape")
    )


def file_url(base_url: str, relpath: str, secret: str | None) -> str:
    """The absolute URL of a served file; signed (``?sig=``) when the server has a token."""
    url = base_url.rstrip("/") + "/files/" + quote(relpath)
    if secret:
        # signed over the decoded path, which is what the server sees
        url += "?sig=" + sign_path(secret, "/files/" + relpath)
    return url


def data_uri(data: bytes, content_type: str) -> str:
    """Inline image for ``sync_mode`` answers."""
    return f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")


def sse_event(payload: str) -> bytes:
    """One Server-Sent Event carrying a JSON text (which never contains a newline)."""
    return f"data: {payload}\n\n".encode()
