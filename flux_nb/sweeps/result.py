"""What a sweep gives back: :class:`SweepResult`, a list of :class:`SweepCell` in product order.

Memory stays bounded for large sweeps: once a cell's images are saved in the store, the cell keeps
only a JPEG thumbnail and reads the full images back from disk when ``cell.result`` is asked for.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..errors import FieldError, FluxCancelledError, FluxError, FluxStoreError, FluxValidationError
from ..params import FluxRequest, LoraWeight
from ..result import FluxImage, FluxResult
from . import grid as _grid
from .plan import Axis, SweepSummary, format_value, summarise

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["SweepCell", "SweepPage", "SweepResult", "STATUSES", "INLINE_MAX_CELLS"]

#: A cell's status: not run yet, generated now, taken from the store, failed, or cancelled.
STATUSES = ("pending", "done", "cached", "failed", "cancelled")
#: The most cells drawn inline in a notebook: one page (``result.page(n)`` shows the others).
INLINE_MAX_CELLS = 64


@dataclass(eq=False)
class SweepCell:
    """One cell: its request, its axis values and how it went (``.result`` or ``.error``)."""

    index: int
    request: FluxRequest
    values: dict[str, Any]
    coords: tuple[int, ...]
    status: str = "pending"
    error: BaseException | None = None
    thumbnail: bytes | None = field(default=None, repr=False)
    #: Seconds from submitting the cell's request to having its images; None if nothing was sent.
    wall_time: float | None = None
    _result: FluxResult | None = field(default=None, repr=False)
    _on_disk: bool = field(default=False, repr=False)
    _key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """What identifies the generation: cells with the same key are one request, sent once."""
        if self._key is None:
            # an unseeded request is random by design: never the same as another cell
            seeded = self.request.seed is not None
            self._key = self.request.cache_key() if seeded else f"unseeded-{self.index}"
        return self._key

    @property
    def ok(self) -> bool:
        return self.status in ("done", "cached")

    @property
    def result(self) -> FluxResult | None:
        """The generation (images read back from disk if they were offloaded), or None.

        Raises :class:`~flux_nb.errors.FluxStoreError` naming the file when the images were
        deleted from the data folder since (:attr:`files_missing`); the grid still shows the
        cell from its thumbnail.
        """
        if self._result is None:
            return None
        if not self._on_disk:
            return self._result
        images = []
        for im in self._result.images:
            try:
                images.append(dataclasses.replace(im, data=Path(im.path).read_bytes()))  # type: ignore[arg-type]
            except OSError as exc:
                raise FluxStoreError(
                    f"the images of sweep cell {self.index} are no longer on disk: cannot read {im.path} "
                    f"({exc.strerror or exc}); re-run the sweep with cache=False to make them again",
                    request_id=self._result.request_id,
                ) from exc
        return dataclasses.replace(self._result, images=images)

    @property
    def files_missing(self) -> list[Path]:
        """This cell's image files that were deleted from the data folder after it finished."""
        if self._result is None or not self._on_disk:
            return []
        return [Path(im.path) for im in self._result.images if im.path is not None and not Path(im.path).is_file()]

    @property
    def paths(self) -> list[Path]:
        if self._result is None:
            return []
        return [im.path for im in self._result.images if im.path is not None]

    def finish(self, result: FluxResult, *, wall_time: float | None = None) -> None:
        """Record a finished generation; keep a thumbnail and drop image bytes saved on disk."""
        self.thumbnail = _grid.make_thumbnail(result)
        self.wall_time = wall_time
        self.status = "cached" if result.cached else "done"
        self.error = None
        saved = all(im.path is not None and Path(im.path).is_file() for im in result.images)
        if saved and result.images:
            light = [dataclasses.replace(im, data=b"") for im in result.images]
            self._result = dataclasses.replace(result, images=light)
            self._on_disk = True
        else:
            self._result = result
            self._on_disk = False

    def share(self, other: "SweepCell") -> None:
        """Take the finished generation of an identical cell (same :attr:`key`; sent once for both)."""
        self.thumbnail = other.thumbnail
        self.wall_time = other.wall_time
        self.status = other.status
        self.error = other.error
        self._result = other._result
        self._on_disk = other._on_disk

    def fail(self, error: BaseException) -> None:
        self.status = "cancelled" if isinstance(error, FluxCancelledError) else "failed"
        self.error = error

    def cancel(self) -> None:
        if self.status == "pending":
            self.status = "cancelled"

    def reset(self) -> None:
        self.status, self.error, self.wall_time = "pending", None, None

    def tile(self, width: int, height: int) -> "Image.Image | None":
        """This cell's picture fitted to ``width`` x ``height`` (from the thumbnail when it is big enough)."""
        from PIL import Image

        if not self.ok:
            return None
        small_enough = max(width, height) <= _grid.THUMB_SIZE
        if self.thumbnail is not None and (small_enough or self.files_missing):
            # the thumbnail, enlarged if the full images are gone
            pil = Image.open(io.BytesIO(self.thumbnail)).convert("RGB")
            w, h = _grid._fit(pil.width, pil.height, width, height)
            return pil.resize((w, h), Image.LANCZOS)
        if self.files_missing:
            return None  # drawn as "files missing"
        result = self.result
        if result is None:
            return None
        images = [im.to_pil() for im in result.images]
        cols, rows = _grid.mosaic_shape(len(images))
        w, h = _grid._fit(result.images[0].width * cols, result.images[0].height * rows, width, height)
        return _grid.mosaic(images, w, h)

    def record(self) -> dict[str, Any]:
        """One row: the axis values, every request field, the seed used, timings, status, files.

        Values are plain JSON: ``loras`` is a list of ``{"path", "scale"}``, ``timings`` a dict,
        ``nsfw`` a list of booleans, ``wall_time`` seconds from submit to images (None if the cell
        came from the cache).
        """
        req = self.request
        row: dict[str, Any] = {"index": self.index, "status": self.status}
        for name, value in self.values.items():
            row[f"axis.{name}"] = format_value(value) if isinstance(value, (LoraWeight, tuple, list)) else value
        row.update(
            prompt=req.prompt,
            image_size=req.size_label,
            width=req.width,
            height=req.height,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            num_images=req.num_images,
            seed=req.seed,
            loras=[l.to_dict() for l in req.loras],
            enable_safety_checker=req.enable_safety_checker,
            output_format=req.output_format,
            acceleration=req.acceleration,
        )
        result = self._result
        row["seed_used"] = result.seed if result is not None else None
        row["request_id"] = result.request_id if result is not None else None
        row["backend"] = result.backend if result is not None else None
        row["cached"] = self.status == "cached"
        timings = result.timings if result is not None else {}
        row["inference_time"] = timings.get("inference") if isinstance(timings, dict) else None
        row["timings"] = _plain(timings or {})
        row["nsfw"] = [bool(x) for x in result.has_nsfw_concepts] if result is not None else None
        row["wall_time"] = round(self.wall_time, 4) if self.wall_time is not None else None
        row["paths"] = [str(p) for p in self.paths]
        row["error"] = str(self.error) if self.error is not None else None
        row["error_type"] = type(self.error).__name__ if self.error is not None else None
        return row


class SweepResult:
    """The cells of a sweep in product order, with grids, figures, records and saving.

    ``cells[k].values`` maps each axis name to the cell's value; ``axes`` are in sweep order
    (x, y, z, ...). A dry run (``dry_run=True``) has every cell pending and nothing sent.
    """

    def __init__(
        self,
        axes: Sequence[Axis],
        cells: Sequence[SweepCell],
        *,
        seed: int | None = None,
        seed_source: str = "given",
        dry_run: bool = False,
        cached_flags: Sequence[bool] | None = None,
        runner: Any = None,
    ):
        self.axes = list(axes)
        self.cells = list(cells)
        self.seed = seed
        self.seed_source = seed_source
        self.dry_run = dry_run
        self.interrupted = False
        self._cached_flags = list(cached_flags) if cached_flags is not None else None
        self._runner = runner

    # -- container ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.cells)

    def __iter__(self) -> Iterator[SweepCell]:
        return iter(self.cells)

    def __getitem__(self, index: int) -> SweepCell:
        return self.cells[index]

    @property
    def results(self) -> list[FluxResult]:
        """The finished generations, in cell order."""
        return [c.result for c in self.cells if c.ok and c.result is not None]  # type: ignore[misc]

    @property
    def failed(self) -> list[SweepCell]:
        return [c for c in self.cells if c.status == "failed"]

    def cell(self, **values: Any) -> SweepCell:
        """The cell with these axis values (``result.cell(guidance_scale=3.5, seed=2)``).

        A name that is not an axis, a value the axis does not have, or values no one cell has
        together are a :class:`~flux_nb.errors.FluxValidationError` naming them.
        """
        from .plan import _field_of

        known = self.cells[0].values if self.cells else {}
        wanted = {(k if k in known else _field_of(k)): v for k, v in values.items()}
        errors = []
        for (name, value), key in zip(values.items(), wanted):
            if key not in known:
                errors.append(FieldError(name, value, f"not an axis of this sweep; its axes are: {', '.join(known) or 'none'}"))
                continue
            allowed = list(dict.fromkeys(format_value(c.values[key]) for c in self.cells))
            if not any(c.values.get(key) == value for c in self.cells):
                errors.append(FieldError(name, value, f"not a value of this axis; it has: {', '.join(allowed)}"))
        if errors:
            raise FluxValidationError(errors)
        for c in self.cells:
            if all(c.values.get(k) == v for k, v in wanted.items()):
                return c
        raise FluxValidationError([FieldError("cell", values, "no one cell has all of these values")])

    def summary(self) -> SweepSummary:
        """Counts (cells, requests, images, megapixels), the estimated cost and how the cells went."""
        return summarise(
            [c.request for c in self.cells],
            [c.status for c in self.cells],
            self._cached_flags if self.dry_run else None,
            keys=[c.key for c in self.cells],
        )

    def __repr__(self) -> str:
        shape = " x ".join(f"{len(a)} {a.name}" for a in self.axes) or "1 cell"
        kind = "dry run" if self.dry_run else "SweepResult"
        return f"<{kind} {shape}: {self.summary()}>"

    # -- running ------------------------------------------------------------------------------

    def retry_failed(self, *, include_cancelled: bool = True) -> "SweepResult":
        """Run again only the cells that failed (and, by default, those cancelled); returns self."""
        runner = self._runner_or_fail()
        wanted = ("failed", "cancelled") if include_cancelled else ("failed",)
        cells = [c for c in self.cells if c.status in wanted]
        for c in cells:
            c.reset()
        self.dry_run = False
        self.interrupted = False
        runner.run(self, cells)
        return self

    def run(self) -> "SweepResult":
        """Run a dry-run plan for real, or finish the cells still pending or cancelled; returns self."""
        self._runner_or_fail().run(self, self._cells_to_run())
        return self

    async def arun(self) -> "SweepResult":
        """Async :meth:`run`, on the running loop: cells fill in as they finish (watch ``.cells``),
        and cancelling the awaiting task cancels the queued requests and keeps what finished."""
        await self._runner_or_fail().arun(self, self._cells_to_run())
        return self

    def _runner_or_fail(self) -> Any:
        if self._runner is None:
            raise FluxError("this sweep result cannot run cells (it was not made by flux_nb.sweep)")
        return self._runner

    def _cells_to_run(self) -> list["SweepCell"]:
        self.dry_run = False
        cells = [c for c in self.cells if c.status in ("pending", "cancelled")]
        for c in cells:
            c.reset()
        return cells

    # -- pictures -----------------------------------------------------------------------------

    def grid(
        self,
        x: str | None = None,
        y: str | None = None,
        z: str | Sequence[str] | None = None,
        thumb: int = 256,
    ) -> "Image.Image":
        """The labelled contact sheet: x values across, y values down, one sub-grid per z value."""
        image, _ = _grid.render_grid(self.axes, self.cells, lambda c, w, h: c.tile(w, h), x=x, y=y, z=z, thumb=thumb)
        return image

    def figure(
        self,
        x: str | None = None,
        y: str | None = None,
        z: str | Sequence[str] | None = None,
        *,
        cell_inches: float = 2.0,
        title: str | None = None,
    ):
        """The same layout as a matplotlib figure with titled axes (rows and columns labelled)."""
        from .figure import render_figure

        return render_figure(
            self.axes, self.cells, lambda c, w, h: c.tile(w, h), x=x, y=y, z=z, cell_inches=cell_inches, title=title
        )

    # -- data ---------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """One dict per cell: axis values (``axis.<name>``), every request field, seed, timings, status, files."""
        return [c.record() for c in self.cells]

    def to_pandas(self):
        """The records as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.records())

    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": [a.to_dict() for a in self.axes],
            "seed": self.seed,
            "seed_source": self.seed_source,
            "summary": self.summary().to_dict(),
            "cells": self.records(),
        }

    def save(self, folder: str | Path) -> list[Path]:
        """Write every image (parameters embedded), ``grid.png`` (axes in its metadata),
        ``manifest.json`` and ``manifest.csv`` into ``folder``; return the paths written."""
        from PIL import PngImagePlugin

        from ..store import _atomic_write, embed

        folder = Path(folder)
        images_dir = folder / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        files_of: dict[int, list[str]] = {}
        missing_of: dict[int, list[str]] = {}
        for c in self.cells:
            if not c.ok or c._result is None:
                continue
            missing = c.files_missing
            if missing:  # deleted from the data folder: listed in the manifest, the grid uses the thumbnail
                missing_of[c.index] = [str(p) for p in missing]
                continue
            names = []
            for i, image in enumerate(c._result.images):
                target = images_dir / f"cell-{c.index:04d}-{i}.{image.extension}"
                if image.path is not None and Path(image.path).is_file():
                    shutil.copyfile(image.path, target)  # already carries its metadata
                else:
                    result = c.result
                    assert result is not None
                    _atomic_write(target, embed(result.images[i].data, image.content_type, result, i))
                written.append(target)
                names.append(str(target.relative_to(folder)))
            files_of[c.index] = names

        manifest = self.to_dict()
        for row in manifest["cells"]:
            row["files"] = files_of.get(row["index"], [])
            if row["index"] in missing_of:
                row["files_missing"] = missing_of[row["index"]]
        grid_path = folder / "grid.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("flux_nb_sweep", json.dumps({"axes": manifest["axes"], "seed": self.seed}))
        info.add_text("parameters", "sweep axes: " + "; ".join(
            f"{a.title}: {', '.join(a.labels)}" for a in self.axes))
        self.grid().save(grid_path, pnginfo=info)
        written.append(grid_path)

        json_path = folder / "manifest.json"
        json_path.write_text(json.dumps(manifest, indent=2, default=str))
        written.append(json_path)
        csv_path = folder / "manifest.csv"
        rows = manifest["cells"]
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(k, v) for k, v in row.items()})
        written.append(csv_path)
        if missing_of:
            first = next(iter(missing_of.values()))[0]
            warnings.warn(
                f"{len(missing_of)} sweep cell(s) were saved without their images, which are no longer on disk "
                f"(e.g. {first}); manifest.json lists them under files_missing and grid.png shows their thumbnails",
                RuntimeWarning,
                stacklevel=2,
            )
        return written

    # -- notebook display ---------------------------------------------------------------------

    def _pages(self, per_page: int = INLINE_MAX_CELLS) -> list[_grid.Window]:
        ax_x, ax_y, ax_z = _grid.resolve_layout(self.axes)
        nz = 1
        for a in ax_z:
            nz *= len(a)
        return _grid.grid_pages(len(ax_x) if ax_x else 1, len(ax_y) if ax_y else 1, nz, per_page)

    @property
    def pages(self) -> int:
        """How many pages the inline display has (:data:`INLINE_MAX_CELLS` cells each)."""
        return len(self._pages())

    def page(self, n: int = 1) -> "SweepPage":
        """Page ``n`` (from 1) of the inline display: whole sub-grids, or bands of whole rows, of
        at most :data:`INLINE_MAX_CELLS` cells. Displays itself in a notebook like the sweep does."""
        pages = self._pages()
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(pages):
            raise FluxValidationError(
                [FieldError("page", n, f"must be a whole number from 1 to {len(pages)} (this sweep's pages)")]
            )
        return SweepPage(self, n, len(pages), pages[n - 1])

    def show(self, page: int = 1) -> "SweepPage":
        """The same as :meth:`page`: ``r.show(page=3)`` in a notebook shows the third page."""
        return self.page(page)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Compact: page 1, one JPEG of at most 64 small thumbnails inside a short HTML summary."""
        if self.dry_run:
            summary = self.summary()
            body = f"<p><b>dry run</b> (nothing sent): {html.escape(str(summary))}</p>"
            return {"text/plain": repr(self), "text/html": body + _axes_html(self.axes)}
        return self.page(1)._repr_mimebundle_(include, exclude)


class SweepPage:
    """One page of a sweep's inline display (see :meth:`SweepResult.page`)."""

    def __init__(self, result: SweepResult, number: int, count: int, window: "_grid.Window"):
        self.result = result
        self.number = number
        self.count = count
        self.window = window

    def __repr__(self) -> str:
        return f"<page {self.number} of {self.count} of {self.result!r}>"

    def grid(self, thumb: int = 256) -> "Image.Image":
        """This page's part of the contact sheet at any thumbnail size."""
        image, _ = _grid.render_grid(
            self.result.axes, self.result.cells, lambda c, w, h: c.tile(w, h), thumb=thumb, window=self.window
        )
        return image

    def _jpeg(self) -> tuple[bytes, int]:
        thumb = 160 if len(self.result.cells) <= 16 else 112
        image, shown = _grid.render_grid(
            self.result.axes, self.result.cells, lambda c, w, h: c.tile(w, h), thumb=thumb, window=self.window
        )
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80, optimize=True)
        return out.getvalue(), shown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        result = self.result
        jpeg, shown = self._jpeg()
        total = len(result.cells)
        note = ""
        if self.count > 1:
            following = f", <code>.page({self.number + 1})</code> the next" if self.number < self.count else ""
            note = (
                f"<p>showing {shown} of {total} cells, page {self.number} of {self.count}: "
                f"<code>.page(n)</code> shows page n (1 to {self.count}){following}; "
                f"<code>.grid()</code> draws every cell</p>"
            )
        encoded = base64.b64encode(jpeg).decode()
        body = (
            f"<div class='flux-nb-sweep'><p>{html.escape(str(result.summary()))}</p>"
            f"<img src='data:image/jpeg;base64,{encoded}' style='max-width:100%'/>{note}</div>"
        )
        text = repr(result) if self.count == 1 else f"{result!r} (page {self.number} of {self.count})"
        return {"text/plain": text, "text/html": body}


def _plain(value: Any) -> Any:
    """``value`` as plain JSON values (what the server sent is JSON already; anything else as text)."""
    return json.loads(json.dumps(value, default=str))


#: Columns of file names, joined with ";" in the CSV manifest.
_CSV_FILE_LISTS = ("paths", "files")


def _csv_value(key: str, value: Any) -> Any:
    """A manifest value as one CSV field: file lists joined with ";", other lists and dicts as JSON."""
    if key in _CSV_FILE_LISTS and isinstance(value, list):
        return ";".join(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value


def _axes_html(axes: Sequence[Axis]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(a.title)}</td><td>{html.escape(', '.join(a.labels))}</td></tr>" for a in axes
    )
    return f"<table><tr><th>axis</th><th>values</th></tr>{rows}</table>" if rows else ""
