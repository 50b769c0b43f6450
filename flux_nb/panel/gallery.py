"""The panel's output grid and history strip (thumbnails as ``ipywidgets.Image``).

Thumbnails are small JPEGs from :func:`flux_nb.render.thumbnail`, so a panel full of results stays
light in the notebook's widget state; NSFW-flagged images show as a mosaic until revealed.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from typing import Any, Callable

import ipywidgets as widgets

from ..params import FluxRequest

__all__ = ["PanelHistoryEntry", "OutputGrid", "HistoryStrip", "thumbnail_jpeg"]


def thumbnail_jpeg(data: bytes, max_side: int) -> bytes:
    """A JPEG of any encoded picture (a sweep's contact sheet), at most ``max_side`` px a side."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
        return out.getvalue()


@dataclass(eq=False)
class PanelHistoryEntry:
    """One finished generation of a panel: the request as sent, and its result.

    Not :class:`flux_nb.store.HistoryEntry` (a row of the on-disk history): this one lives only
    in the panel and holds the result itself."""

    index: int
    request: FluxRequest
    result: Any  # FluxResult

    @property
    def reproduce_request(self) -> FluxRequest:
        """The request with the seed actually used."""
        seed = getattr(self.result, "seed", None)
        return self.request.replace(seed=seed) if seed is not None else self.request


class OutputGrid(widgets.GridBox):
    """The images of the latest result, each with the request's seed under it; NSFW-flagged ones pixelated."""

    def __init__(self, thumb_size: int = 256):
        self.thumb_size = thumb_size
        super().__init__([], layout=widgets.Layout(grid_template_columns=f"repeat(auto-fill, {thumb_size + 8}px)",
                                                   grid_gap="6px"))
        self.add_class("flux-nb-grid")

    @property
    def images(self) -> list[widgets.Image]:
        """The thumbnail ``Image`` widgets shown now."""
        return [w for cell in self.children for w in cell.children if isinstance(w, widgets.Image)]

    def prepare(self, result: Any) -> None:
        """Make (and cache) the thumbnails :meth:`show_result` will use; slow, so call it off the loop."""
        from ..render import thumbnail

        for image in result.images:
            thumbnail(image, self.thumb_size, kind="mosaic" if getattr(image, "nsfw", False) else "thumb")

    def show_result(self, result: Any) -> None:
        """Replace the grid with ``result``'s images."""
        cells = []
        count = len(result.images)
        for i, image in enumerate(result.images):
            # The seed of the request, as the notebook grid shows it: how image i of a batch
            # derives its own seed is the backend's business (only the local engines use seed + i).
            number = f" #{i + 1}/{count}" if count > 1 else ""
            cells.append(self._cell(image, f"seed {result.seed}{number} · {image.width}x{image.height}"))
        self.layout.grid_template_columns = f"repeat(auto-fill, {self.thumb_size + 8}px)"
        self._replace(cells)

    def show_picture(self, data: bytes, caption: str, max_side: int = 1024) -> None:
        """Show one picture (a sweep's contact sheet) instead of images."""
        thumb = widgets.Image(value=thumbnail_jpeg(data, max_side), format="jpeg")
        thumb.add_class("flux-nb-grid-image")
        label = widgets.HTML(f"<small>{html.escape(caption)}</small>")
        cell = widgets.VBox([thumb, label])
        self.layout.grid_template_columns = "1fr"
        self._replace([cell])

    def clear(self) -> None:
        self._replace([])

    def _replace(self, cells: list[widgets.Widget]) -> None:
        old = self.children
        self.children = cells
        for cell in old:
            for child in cell.children:
                child.close()
            cell.close()

    def _cell(self, image: Any, caption: str) -> widgets.VBox:
        from ..render import thumbnail  # cached per image, shared with the notebook renderer

        flagged = bool(getattr(image, "nsfw", False))
        thumb = widgets.Image(value=thumbnail(image, self.thumb_size, kind="mosaic" if flagged else "thumb"), format="jpeg",
                              layout=widgets.Layout(max_width=f"{self.thumb_size}px"))
        thumb.add_class("flux-nb-grid-image")
        label = widgets.HTML(f"<small>{html.escape(caption)}</small>")
        parts: list[widgets.Widget] = [thumb, label]
        if flagged:
            reveal = widgets.Button(description="Flagged NSFW: show", layout=widgets.Layout(width="auto"))
            reveal.add_class("flux-nb-reveal")

            def _reveal(_b: Any, thumb: widgets.Image = thumb, image: Any = image) -> None:
                thumb.value = thumbnail(image, self.thumb_size)
                _b.layout.display = "none"

            reveal.on_click(_reveal)
            parts.append(reveal)
        return widgets.VBox(parts)


class HistoryStrip(widgets.HBox):
    """Small thumbnail buttons of this panel's generations, newest first; clicking one restores it."""

    def __init__(self, on_restore: Callable[[PanelHistoryEntry], None], thumb_size: int = 64, limit: int = 50):
        self._on_restore = on_restore
        self.thumb_size = thumb_size
        self.limit = limit
        self.entries: list[PanelHistoryEntry] = []
        super().__init__([], layout=widgets.Layout(overflow="auto hidden"))
        self.add_class("flux-nb-history")

    def prepare(self, result: Any) -> None:
        """Make (and cache) the thumbnail :meth:`add` will use; slow, so call it off the loop."""
        if result.images:
            from ..render import thumbnail

            first = result.images[0]
            thumbnail(first, self.thumb_size, kind="mosaic" if first.nsfw else "thumb")

    def add(self, entry: PanelHistoryEntry) -> None:
        self.entries.append(entry)
        first = entry.result.images[0] if entry.result.images else None
        parts: list[widgets.Widget] = []
        if first is not None:
            from ..render import thumbnail

            parts.append(widgets.Image(value=thumbnail(first, self.thumb_size, kind="mosaic" if first.nsfw else "thumb"),
                                       format="jpeg", layout=widgets.Layout(width=f"{self.thumb_size}px")))
        button = widgets.Button(description=f"#{entry.index}", tooltip=f"Restore: {entry.request.prompt[:80]}",
                                layout=widgets.Layout(width=f"{self.thumb_size}px"))
        button.add_class("flux-nb-history-restore")
        button.on_click(lambda _b, entry=entry: self._on_restore(entry))
        parts.append(button)
        item = widgets.VBox(parts)
        item.add_class("flux-nb-history-item")
        children = [item, *self.children]
        for stale in children[self.limit:]:
            for child in stale.children:
                child.close()
            stale.close()
        self.children = children[: self.limit]

    @property
    def buttons(self) -> list[widgets.Button]:
        """The restore buttons, newest first."""
        return [w for item in self.children for w in item.children if isinstance(w, widgets.Button)]
