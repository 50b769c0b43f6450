"""The exceptions flux-nb raises.

Every error a user can meet is a :class:`FluxError`; catch that to catch them all::

    FluxError
    ├── FluxValidationError        bad request fields (also a ValueError); .errors lists each field
    ├── FluxConfigError            bad backend settings: endpoint URL, key, insecure http (a ValueError)
    ├── FluxHTTPError              the server answered with an error status; .status_code, .detail
    │   ├── FluxAuthError          401 / 403: missing or wrong key
    │   ├── FluxInputError         422: the server refused the input; .errors as fal sent them
    │   ├── FluxNotFoundError      404: unknown or expired request
    │   ├── FluxRateLimitError     429; .retry_after seconds when the server said
    │   └── FluxServerError        5xx
    ├── FluxConnectionError        could not reach the server (DNS, refused, dropped)
    ├── FluxAmbiguousSubmitError   a submit was sent but its answer was lost: the job may exist
    ├── FluxTimeoutError           a deadline passed (also a TimeoutError)
    ├── FluxCancelledError         the job was cancelled
    ├── FluxJobFailedError         the model ran and failed; .error_type as the server said
    ├── FluxProtocolError          the server's answer was malformed (bad JSON, missing keys, bad image)
    └── FluxStoreError             the local data folder could not be written (also an OSError)

Each carries ``request_id`` where one is known. None ever carries the API key: messages are built
from URLs and server answers, and the client never puts the key in either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldError",
    "FluxError",
    "FluxValidationError",
    "FluxConfigError",
    "FluxHTTPError",
    "FluxAuthError",
    "FluxInputError",
    "FluxNotFoundError",
    "FluxRateLimitError",
    "FluxServerError",
    "FluxConnectionError",
    "FluxAmbiguousSubmitError",
    "FluxTimeoutError",
    "FluxCancelledError",
    "FluxJobFailedError",
    "FluxProtocolError",
    "FluxStoreError",
]


class FluxError(Exception):
    """Base of every flux-nb error. ``request_id`` is the server's id for the job, if any."""

    def __init__(self, message: str, *, request_id: str | None = None):
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        if self.request_id:
            return f"{self.message} (request {self.request_id})"
        return self.message


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where it is, the value given and what is allowed."""

    field: str
    value: Any
    message: str
    kind: str = "value_error"

    def __str__(self) -> str:
        return f"{self.field}={_short_repr(self.value)}: {self.message}"

    def to_fal(self) -> dict[str, Any]:
        """This error as one entry of fal's 422 ``detail`` list."""
        loc: list[Any] = ["body"]
        for part in self.field.split("."):
            loc.append(int(part) if part.isascii() and part.isdigit() else part)
        return {"loc": loc, "msg": self.message, "type": self.kind}


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FluxValidationError(FluxError, ValueError):
    """Invalid request fields. ``errors`` lists every bad field found, not just the first."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        if len(self.errors) == 1:
            message = f"invalid request: {self.errors[0]}"
        else:
            message = f"{len(self.errors)} invalid fields: " + "; ".join(str(e) for e in self.errors)
        super().__init__(message)

    @property
    def fields(self) -> list[str]:
        return [e.field for e in self.errors]


class FluxConfigError(FluxError, ValueError):
    """A backend setting is unusable (malformed endpoint, plain http to a remote host, ...)."""


class FluxHTTPError(FluxError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        detail: Any = None,
        error_type: str | None = None,
        retryable: bool | None = None,
        request_id: str | None = None,
    ):
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.detail = detail
        self.error_type = error_type
        self.retryable = retryable


class FluxAuthError(FluxHTTPError):
    """401 or 403: the key is missing or wrong."""


class FluxInputError(FluxHTTPError):
    """422: the server refused the input. ``errors`` is fal's ``detail`` list."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.detail if isinstance(self.detail, list) else []


class FluxNotFoundError(FluxHTTPError):
    """404: the request id is unknown, or its result expired."""


class FluxRateLimitError(FluxHTTPError):
    """429: too many requests. ``retry_after`` is the wait the server asked for, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class FluxServerError(FluxHTTPError):
    """5xx: the server failed."""


class FluxConnectionError(FluxError):
    """The server could not be reached, or dropped the connection."""


class FluxAmbiguousSubmitError(FluxError):
    """A submit reached the wire but its answer was lost, so the job may or may not exist.

    flux-nb never re-sends such a submit on its own: doing so could create (and bill) a second job.
    Re-run the cell to submit again, or look at ``flux_nb.history()`` for the job.
    """


class FluxTimeoutError(FluxError, TimeoutError):
    """A deadline passed before the server answered or the job finished."""


class FluxCancelledError(FluxError):
    """The job was cancelled (by the user, or on the server)."""


class FluxJobFailedError(FluxError):
    """The model ran and reported an error."""

    def __init__(self, message: str, *, error_type: str | None = None, request_id: str | None = None):
        super().__init__(message, request_id=request_id)
        self.error_type = error_type


class FluxProtocolError(FluxError):
    """The server's answer did not follow the protocol (malformed JSON, missing keys, bad image)."""


class FluxStoreError(FluxError, OSError):
    """The local store could not be written or read (full disk, read-only or missing folder)."""
