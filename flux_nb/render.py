"""How a result shows itself in a notebook: a small thumbnail grid that keeps notebooks small.

``FluxResult._repr_mimebundle_`` calls :func:`result_mimebundle`, which gives

- ``text/html``: a grid of JPEG thumbnails (longest side 256 px, quality 80) with the seed and key
  parameters under each. Clicking a thumbnail opens a larger copy in place (512 px) and says where
  the full-size image is (below).
- ``image/png``: one small contact sheet, for front ends without HTML.
- ``text/plain``: the result's repr.

Why not full size in the page: a notebook stores every output, and four full-size base64 PNGs add
megabytes per cell. Full size lives in the saved file instead. Every generation is saved in
flux-nb's data folder, which is not under the notebook's folder, and browsers refuse ``file://``
links from a Jupyter page; so a link is made only for a file under the kernel's working folder (the
notebook's folder, which Jupyter serves: after ``result.save("out")``), as a relative link. Any
other saved file is named by its path, as copyable text, with the Python that opens it
(``result[i].to_pil()``) or copies it next to the notebook (``result.save("out")``). The in-page
view needs no server, no JavaScript and no trust. A 4-image 1024x768 result
adds about 100 KB for plain images and about 230 KB for very detailed ones (measured on noise-heavy
1024x768 JPEGs; tests hold it under 0.5 MB).

Images flagged NSFW are never embedded clearly: their tiles are a 16 px mosaic, blurred with CSS,
labelled; clicking one only drops the blur (the mosaic stays a mosaic) and says how to see the image
itself (:func:`reveal`, or the saved file).

Thumbnails are made once per image and size (Pillow ``draft()`` decodes JPEGs at reduced scale).
"""

from __future__ import annotations

import base64
import html
import io
import os
import threading
import weakref
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .result import FluxImage, FluxResult

__all__ = [
    "RenderOptions",
    "options",
    "configure",
    "thumbnail",
    "result_html",
    "contact_sheet",
    "result_mimebundle",
    "ResultView",
    "view",
    "show",
    "reveal",
]


@dataclass(frozen=True)
class RenderOptions:
    """How results are drawn. Change the process-wide defaults with :func:`configure`."""

    #: longest side of grid thumbnails, px
    thumbnail_size: int = 256
    #: JPEG quality of thumbnails (1-95)
    thumbnail_quality: int = 80
    #: longest side of the in-page enlarged view, px (0: no enlarged view, only the file link)
    preview_size: int = 512
    #: JPEG quality of the enlarged view
    preview_quality: int = 70
    #: longest side of each tile of the PNG contact sheet, px
    sheet_tile: int = 128
    #: longest side of the mosaic an NSFW-flagged image is reduced to before blurring, px
    nsfw_mosaic: int = 16
    #: show NSFW-flagged images clearly
    reveal_nsfw: bool = False

    def __post_init__(self) -> None:
        from .errors import FieldError, FluxValidationError

        errors: list[FieldError] = []
        for name in ("thumbnail_size", "sheet_tile", "nsfw_mosaic"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 4096:
                errors.append(FieldError(name, value, "render option: must be a whole number of pixels from 8 to 4096", "range"))
        if not isinstance(self.preview_size, int) or not (self.preview_size == 0 or 8 <= self.preview_size <= 4096):
            errors.append(FieldError("preview_size", self.preview_size, "render option: must be 0 (off) or 8 to 4096 pixels", "range"))
        for name in ("thumbnail_quality", "preview_quality"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 95:
                errors.append(FieldError(name, value, "render option: must be a JPEG quality from 1 to 95", "range"))
        if errors:
            raise FluxValidationError(errors)


def _with_changes(base: RenderOptions, changes: dict[str, Any]) -> RenderOptions:
    """``base`` with ``changes``; an unknown or bad option is a :class:`FluxValidationError` naming it."""
    from .errors import FieldError, FluxValidationError

    known = [f.name for f in fields(RenderOptions)]
    unknown = [
        FieldError(name, value, f"unknown render option; allowed: {', '.join(known)}", "extra")
        for name, value in changes.items() if name not in known
    ]
    if unknown:
        raise FluxValidationError(unknown)
    return replace(base, **changes)


_options = RenderOptions()
_options_lock = threading.Lock()


def options() -> RenderOptions:
    """The current process-wide render options."""
    return _options


def configure(**changes: Any) -> RenderOptions:
    """Change the process-wide render defaults (e.g. ``configure(thumbnail_size=192)``)."""
    global _options
    with _options_lock:
        _options = _with_changes(_options, changes)
        return _options


# -- thumbnails -----------------------------------------------------------------------------------

# image -> {(kind, size, quality): jpeg bytes}; entries go away with their image.
_cache: "weakref.WeakKeyDictionary[FluxImage, dict[tuple, Any]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _decode(data: bytes, longest: int) -> "Image.Image":
    """Decode ``data`` at about ``longest`` px, as RGB; JPEGs are decoded at reduced scale."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("RGB", (longest, longest))
    if image.mode not in ("RGB", "L"):
        if "A" in image.getbands() or image.mode == "P":
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, "white")
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    image.thumbnail((longest, longest))
    return image.convert("RGB")


def _jpeg(image: "Image.Image", quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True, progressive=False)
    return buf.getvalue()


def _mosaic(image: "Image.Image", cells: int, size: tuple[int, int]) -> "Image.Image":
    from PIL import Image

    small = image.copy()
    small.thumbnail((cells, cells))
    return small.resize(size, Image.Resampling.NEAREST)


def thumbnail(image: "FluxImage", size: int | None = None, *, kind: str = "thumb", opts: RenderOptions | None = None) -> bytes:
    """A JPEG of ``image`` with its longest side ``size`` px (cached per image).

    ``kind`` is ``"thumb"`` (quality ``thumbnail_quality``), ``"preview"`` (``preview_quality``) or
    ``"mosaic"`` (the pixelated stand-in used for NSFW-flagged images).
    """
    opts = opts or _options
    if kind == "preview":
        size, quality = size or opts.preview_size, opts.preview_quality
    else:
        size, quality = size or opts.thumbnail_size, opts.thumbnail_quality
    key = (kind, size, quality, opts.nsfw_mosaic if kind == "mosaic" else 0)
    with _cache_lock:
        hit = _cache.get(image, {}).get(key)
    if hit is not None:
        return hit
    decoded = _decode(image.data, size)
    if kind == "mosaic":
        decoded = _mosaic(decoded, opts.nsfw_mosaic, decoded.size)
    out = _jpeg(decoded, quality)
    with _cache_lock:
        _cache.setdefault(image, {})[key] = out
    return out


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _fit(width: int, height: int, longest: int) -> tuple[int, int]:
    scale = min(1.0, longest / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """<style>
.fluxnb{font:12px/1.35 system-ui,sans-serif;color:inherit}
.fluxnb-head{margin:0 0 6px;opacity:.85}
.fluxnb-grid{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
.fluxnb-tile{margin:0;max-width:100%}
.fluxnb-tile:has(details[open]){flex-basis:100%}
.fluxnb-tile summary{list-style:none;cursor:zoom-in;position:relative;display:inline-block}
.fluxnb-tile summary::-webkit-details-marker{display:none}
.fluxnb-tile summary img{display:block;border-radius:3px}
.fluxnb-tile details[open] summary{cursor:zoom-out}
.fluxnb-big{display:block;max-width:100%;height:auto;margin-top:6px;border-radius:3px}
.fluxnb-nsfw summary img{filter:blur(8px)}
.fluxnb-nsfw details[open] summary img{filter:none}
.fluxnb-label{position:absolute;left:50%;top:50%;transform:translate(-50%,-50%);background:rgba(0,0,0,.7);
color:#fff;padding:3px 8px;border-radius:3px;white-space:nowrap}
.fluxnb-nsfw details[open] .fluxnb-label{display:none}
.fluxnb-cap{opacity:.8;margin-top:3px}
.fluxnb code{font-size:11px}
</style>"""


def _file_href(path: Path | None) -> str | None:
    """A link the notebook front end can open, or None.

    Only a file under the kernel's working folder (the notebook's folder, which Jupyter serves)
    gets one, as a relative link. Browsers block ``file://`` links from a Jupyter page, so a file
    anywhere else gets no link (the tile shows its path instead).
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    try:
        relative = path.resolve().relative_to(Path(os.getcwd()).resolve())
    except ValueError:
        return None
    return "/".join(quote(part) for part in relative.parts)  # html-escaped where it is written


def _full_size_note(index: int, image: "FluxImage") -> str:
    """Where the full-size image is: a link when the page can open it, else its path and the Python."""
    esc = html.escape
    size = f"{image.width}×{image.height}"
    href = _file_href(image.path)
    if href:
        return f'<a href="{esc(href, quote=True)}" target="_blank" rel="noopener">full size {size}</a>'
    python = f"<code>result[{index}].to_pil()</code>"
    if image.path is not None and Path(image.path).is_file():
        return (
            f"full size {size} saved at <code>{esc(str(image.path))}</code>; open it with {python}, or "
            '<code>result.save("out")</code> to copy it next to the notebook (then this is a link)'
        )
    return f"full size {size}: {python} in Python"


def _summary_line(result: "FluxResult") -> str:
    from .metadata import format_number as _num

    request = result.request
    width, height = request.size
    parts = [
        f"{request.num_inference_steps} steps",
        f"CFG {_num(request.guidance_scale)}",
        f"{width}×{height}",
        request.output_format,
    ]
    for lora in request.loras:
        name = lora.path.rstrip("/").rsplit("/", 1)[-1] or lora.path
        parts.append(f"LoRA {name}:{_num(lora.scale)}")
    if result.backend:
        parts.append(result.backend)
    if result.cached:
        parts.append("cached")
    return " · ".join(parts)


def _tile(result: "FluxResult", index: int, image: "FluxImage", opts: RenderOptions) -> str:
    esc = html.escape
    hidden = image.nsfw and not opts.reveal_nsfw
    width, height = _fit(image.width, image.height, opts.thumbnail_size)
    thumb = thumbnail(image, kind="mosaic" if hidden else "thumb", opts=opts)
    alt = esc(f"{result.prompt[:120]} (seed {result.seed}, image {index + 1})", quote=True)
    img = f'<img src="{_data_uri(thumb)}" width="{width}" height="{height}" alt="{alt}">'
    note = _full_size_note(index, image)
    if hidden:
        label = '<span class="fluxnb-label">NSFW · click for how to view</span>'
        body = (
            '<div class="fluxnb-cap">Flagged by the safety checker: only this mosaic is in the notebook. '
            "To see the image, <code>flux_nb.render.reveal(result)</code> shows it clearly (that puts a "
            f"clear copy in the notebook); {note}.</div>"
        )
        classes = "fluxnb-tile fluxnb-nsfw"
        title = "flagged NSFW: click for how to view"
    else:
        label = ""
        big = ""
        if opts.preview_size:
            bw, bh = _fit(image.width, image.height, opts.preview_size)
            big = f'<img class="fluxnb-big" src="{_data_uri(thumbnail(image, kind="preview", opts=opts))}" width="{bw}" height="{bh}" alt="{alt}">'
        body = big + f'<div class="fluxnb-cap">{note}</div>'
        classes = "fluxnb-tile"
        title = f"click for a larger view ({opts.preview_size} px)" if opts.preview_size else "click for the full-size file"
    count = f" #{index + 1}/{len(result.images)}" if len(result.images) > 1 else ""
    caption = f'<figcaption class="fluxnb-cap">seed {result.seed}{count}</figcaption>'
    return (
        f'<figure class="{classes}"><details><summary title="{title}">{img}{label}</summary>'
        f"{body}</details>{caption}</figure>"
    )


def result_html(result: "FluxResult", opts: RenderOptions | None = None) -> str:
    """The HTML grid for ``result`` (see the module docstring for what it holds and why)."""
    opts = opts or _options
    prompt = html.escape(result.prompt if len(result.prompt) <= 300 else result.prompt[:297] + "...")
    head = f'<div class="fluxnb-head"><b>{prompt}</b><br>{html.escape(_summary_line(result))}</div>'
    tiles = "".join(_tile(result, i, image, opts) for i, image in enumerate(result.images))
    if not tiles:
        tiles = "<i>no images</i>"
    return f'{_CSS}<div class="fluxnb">{head}<div class="fluxnb-grid">{tiles}</div></div>'


def _sheet_tile(image: "FluxImage", size: int, *, hidden: bool, opts: RenderOptions) -> "Image.Image":
    from PIL import Image, ImageFilter

    key = ("sheet", size, hidden, opts.nsfw_mosaic if hidden else 0)
    with _cache_lock:
        hit = _cache.get(image, {}).get(key)
    if hit is not None:
        return Image.frombytes("RGB", hit[0], hit[1])
    decoded = _decode(image.data, size)
    if hidden:
        decoded = _mosaic(decoded, opts.nsfw_mosaic, decoded.size).filter(ImageFilter.GaussianBlur(4))
    with _cache_lock:
        _cache.setdefault(image, {})[key] = (decoded.size, decoded.tobytes())
    return decoded


def contact_sheet(result: "FluxResult", opts: RenderOptions | None = None) -> bytes | None:
    """One small PNG with every image side by side (palette-reduced to stay small); None if empty."""
    from PIL import Image

    opts = opts or _options
    if not result.images:
        return None
    tile = opts.sheet_tile
    gap = 4
    tiles = [_sheet_tile(image, tile, hidden=image.nsfw and not opts.reveal_nsfw, opts=opts) for image in result.images]
    columns = min(4, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_w = max(t.width for t in tiles)
    cell_h = max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), "white")
    for i, t in enumerate(tiles):
        row, col = divmod(i, columns)
        sheet.paste(t, (col * (cell_w + gap), row * (cell_h + gap)))
    buf = io.BytesIO()
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def result_mimebundle(result: "FluxResult", opts: RenderOptions | None = None) -> dict[str, Any]:
    """``text/html`` grid, ``image/png`` contact sheet and ``text/plain`` repr for ``result``."""
    opts = opts or _options
    bundle: dict[str, Any] = {"text/plain": repr(result), "text/html": result_html(result, opts)}
    sheet = contact_sheet(result, opts)
    if sheet is not None:
        bundle["image/png"] = sheet
    return bundle


# -- explicit display -----------------------------------------------------------------------------


class ResultView:
    """A result drawn with particular options; displays itself (e.g. as a cell's value)."""

    def __init__(self, result: "FluxResult", opts: RenderOptions):
        self.result = result
        self.options = opts

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return result_mimebundle(self.result, self.options)

    def __repr__(self) -> str:
        return repr(self.result)


def view(result: "FluxResult", **changes: Any) -> ResultView:
    """``result`` drawn with some options changed (``view(res, thumbnail_size=512)``).

    Raises :class:`~flux_nb.errors.FluxValidationError` naming an unknown or bad option."""
    return ResultView(result, _with_changes(_options, changes))


def show(result: "FluxResult", *, reveal_nsfw: bool = False, **changes: Any) -> None:
    """Display ``result`` now (``IPython.display``), optionally with NSFW images shown clearly."""
    from IPython.display import display

    display(view(result, reveal_nsfw=reveal_nsfw, **changes))


def reveal(result: "FluxResult", **changes: Any) -> ResultView:
    """``result`` with its NSFW-flagged images shown clearly (the clear copy then is in the notebook)."""
    return view(result, reveal_nsfw=True, **changes)
