"""Typed results: what a finished generation gives back, images already downloaded.

A :class:`FluxResult` holds its :class:`FluxImage` bytes in memory (fal's URLs expire within the
hour), the request that made it and the seed actually used, so it can always be reproduced.
Display in notebooks (``_repr_mimebundle_``) and saving live in :mod:`flux_nb.render` and
:mod:`flux_nb.metadata`; this module stays free of heavy imports.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .params import FluxRequest

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["FluxImage", "FluxResult"]


@dataclass(eq=False)
class FluxImage:
    """One generated image. ``data`` is the encoded file (JPEG or PNG) exactly as the server sent it."""

    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    url: str | None = field(default=None, repr=False)
    file_name: str | None = None
    nsfw: bool = False
    path: Path | None = None  # where flux-nb saved it, once saved

    @property
    def extension(self) -> str:
        return {"image/png": "png", "image/webp": "webp"}.get(self.content_type, "jpeg")

    def to_pil(self) -> "Image.Image":
        """The image as a Pillow image (decoded on each call)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def _repr_png_(self) -> bytes | None:
        return self.data if self.content_type == "image/png" else None

    def _repr_jpeg_(self) -> bytes | None:
        return self.data if self.content_type != "image/png" else None


@dataclass(eq=False)
class FluxResult:
    """A finished generation: its images, the seed used and the request that made it."""

    images: list[FluxImage]
    seed: int
    request: FluxRequest
    prompt: str = ""
    has_nsfw_concepts: list[bool] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    backend: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    cached: bool = False  # True when served from the local store instead of the server
    save_error: str | None = None  # why the images could not be saved to the data folder, if so

    def __post_init__(self) -> None:
        if not self.prompt:
            self.prompt = self.request.prompt

    @property
    def reproduce_request(self) -> FluxRequest:
        """The request with the seed actually used, which regenerates these images."""
        return self.request.replace(seed=self.seed)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    def __getitem__(self, index: int) -> FluxImage:
        return self.images[index]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{im.width}x{im.height}" for im in self.images)
        rid = f", request_id={self.request_id!r}" if self.request_id else ""
        return f"<FluxResult {len(self.images)} image(s) [{sizes}] seed={self.seed} prompt={self.prompt[:60]!r}{rid}>"

    # Notebook display and saving are provided by flux_nb.render / flux_nb.metadata; imported lazily
    # so that a plain ``import flux_nb`` stays light.
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .render import result_mimebundle

        return result_mimebundle(self)

    def show(self, *, reveal_nsfw: bool = False, **options: Any) -> None:
        """Display the grid now (``reveal_nsfw=True`` shows flagged images unblurred)."""
        from .render import show

        show(self, reveal_nsfw=reveal_nsfw, **options)

    def save(self, folder: str | Path) -> list[Path]:
        """Write full-size images with embedded parameters, plus ``request.json``; return the paths."""
        from .metadata import save_result

        return save_result(self, Path(folder))
