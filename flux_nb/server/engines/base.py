"""The engine interface: what the local server asks of an image generator.

The protocol code (queue, status, files) knows only this interface, so a new engine plugs in
without touching it. An engine runs in a worker thread, one job per call of :meth:`Engine.generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from ...params import FluxRequest

__all__ = [
    "Engine",
    "EngineOutput",
    "GeneratedImage",
    "JobContext",
    "JobCancelled",
    "EngineInputError",
]


class JobCancelled(Exception):
    """Raised inside an engine (by :meth:`JobContext.check_cancelled`) to stop a cancelled job."""


class EngineInputError(Exception):
    """The engine cannot run this input (e.g. a LoRA that does not fit the model): answered as 422."""

    def __init__(self, field: str, value: Any, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.value = value
        self.message = message


@dataclass
class GeneratedImage:
    """One encoded image as the engine made it."""

    data: bytes
    content_type: str  # "image/jpeg" or "image/png"
    width: int
    height: int


@dataclass
class EngineOutput:
    images: list[GeneratedImage]
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class JobContext:
    """What a running job may use: logging to the status stream, cancellation, file lookup."""

    request_id: str
    log: Callable[[str], None]  # append a line to the job's logs (seen by status / stream clients)
    is_cancelled: Callable[[], bool]
    resolve_file: Callable[[str], Path]  # a LoRA path/URL -> local file (uploaded, cached, fetched)

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled; call it between steps."""
        if self.is_cancelled():
            raise JobCancelled(self.request_id)


@runtime_checkable
class Engine(Protocol):
    """An image generator behind the fal-compatible server."""

    #: Short name reported in logs and `/health` (e.g. "preview", "diffusers").
    name: str
    #: Jobs this engine can run at once (None: as many as the server's workers). A GPU says 1.
    max_concurrency: int | None

    def check(self, request: FluxRequest) -> None:
        """Refuse input this engine cannot run, before queueing: raise EngineInputError."""

    def generate(self, request: FluxRequest, seed: int, ctx: JobContext) -> EngineOutput:
        """Make ``request.num_images`` images from ``seed`` (image i uses seed + i).

        Runs in a worker thread. Call ``ctx.check_cancelled()`` between steps and ``ctx.log()``
        for progress. Raise EngineInputError for input the model cannot take.
        """
        ...

    def close(self) -> None:
        """Free resources when the server stops."""
