"""The labelled contact sheet of a sweep (PIL), A1111 style, and the cells' thumbnails.

Columns are the x axis, rows the y axis, and each combination of the remaining (z) axes gets its own
sub-grid with a title band. Headers read ``guidance: 3.5``; long labels wrap; the font grows with
the thumbnail size. Failed cells show their error text; cells not run yet show their status.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import FieldError, FluxValidationError
from .plan import Axis, _field_of, format_value

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image, ImageFont

    from ..result import FluxResult

__all__ = [
    "THUMB_SIZE",
    "Window",
    "cell_coords",
    "grid_pages",
    "make_thumbnail",
    "mosaic_shape",
    "render_grid",
    "resolve_layout",
]

#: Longest side of the thumbnail each finished cell keeps in memory (as JPEG bytes).
THUMB_SIZE = 256

_BG = (255, 255, 255)
_TEXT = (20, 20, 20)
_PENDING_BG = (232, 232, 232)
_FAILED_BG = (253, 226, 226)
_FAILED_TEXT = (160, 20, 20)


def _font(size: int) -> "ImageFont.ImageFont | ImageFont.FreeTypeFont":
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable TrueType font (Pillow >= 10.1 with FreeType)
    except TypeError:  # pragma: no cover - old Pillow: fixed-size bitmap font
        return ImageFont.load_default()


def _fit(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    scale = min(box_w / width, box_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def mosaic_shape(count: int) -> tuple[int, int]:
    """Columns and rows of the near-square grid that one cell's ``count`` images make. Pure."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return cols, max(1, math.ceil(count / cols))


def cell_coords(
    index: dict[str, int], ax_x: Axis | None, ax_y: Axis | None, ax_z: Sequence[Axis], i: int, j: int,
    combo: Sequence[int],
) -> tuple[int, ...]:
    """A cell's coordinates (its position on each sweep axis, ``index`` giving each axis's place)
    at column ``i``, row ``j`` of the sub-grid ``combo`` of the z axes. Pure."""
    coords = [0] * len(index)
    if ax_x:
        coords[index[ax_x.name]] = i
    if ax_y:
        coords[index[ax_y.name]] = j
    for axis, k in zip(ax_z, combo):
        coords[index[axis.name]] = k
    return tuple(coords)


def mosaic(images: Sequence["Image.Image"], box_w: int, box_h: int) -> "Image.Image":
    """The images of one cell fitted into a ``box_w`` x ``box_h`` tile (one image, or a small grid)."""
    from PIL import Image

    tile = Image.new("RGB", (box_w, box_h), _BG)
    if not images:
        return tile
    cols, rows = mosaic_shape(len(images))
    sub_w, sub_h = box_w // cols, box_h // rows
    for i, image in enumerate(images):
        image = image.convert("RGB")
        w, h = _fit(image.width, image.height, sub_w, sub_h)
        small = image.resize((w, h), Image.LANCZOS)
        col, row = i % cols, i // cols
        tile.paste(small, (col * sub_w + (sub_w - w) // 2, row * sub_h + (sub_h - h) // 2))
    return tile


def make_thumbnail(result: "FluxResult", size: int = THUMB_SIZE) -> bytes:
    """A JPEG thumbnail of a cell's images (longest side ``size``): what a sweep keeps in memory."""
    from PIL import Image

    images = []
    for image in result.images:
        pil = Image.open(io.BytesIO(image.data))
        pil.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        images.append(pil.convert("RGB"))
    if not images:
        w, h = size, size
    else:
        cols, rows = mosaic_shape(len(images))
        w, h = _fit(images[0].width * cols, images[0].height * rows, size, size)
    out = io.BytesIO()
    mosaic(images, w, h).save(out, "JPEG", quality=85)
    return out.getvalue()


def wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words longer than a line are split."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and font.getlength(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _invalid(argument: str, value: Any, message: str) -> FluxValidationError:
    return FluxValidationError([FieldError(argument, value, message, "value_error")])


def resolve_layout(
    axes: Sequence[Axis], x: str | None = None, y: str | None = None, z: str | Sequence[str] | None = None
) -> tuple[Axis | None, Axis | None, list[Axis]]:
    """Which axis goes across, which down and which split the sub-grids (aliases accepted).

    Unnamed axes fill x, then y, then z in sweep order; every axis beyond the third joins z.
    """
    by_name = {a.name: a for a in axes}

    def find(name: str, argument: str) -> Axis:
        key = name if name in by_name else _field_of(name)
        if key not in by_name:
            allowed = ", ".join(by_name) or "none"
            raise _invalid(argument, name, f"no axis {name!r} in this sweep; its axes are: {allowed}")
        return by_name[key]

    chosen_x = find(x, "x") if x else None
    chosen_y = find(y, "y") if y else None
    z_names = [z] if isinstance(z, str) else list(z or [])
    chosen_z = [find(n, "z") for n in z_names]
    used = {a.name for a in (chosen_x, chosen_y, *chosen_z) if a is not None}
    if len(used) < len([a for a in (chosen_x, chosen_y, *chosen_z) if a is not None]):
        raise _invalid("z" if z_names else "y", {"x": x, "y": y, "z": z}, "an axis can be used only once among x, y and z")
    rest = [a for a in axes if a.name not in used]
    if chosen_x is None and rest:
        chosen_x = rest.pop(0)
    if chosen_y is None and rest:
        chosen_y = rest.pop(0)
    chosen_z.extend(rest)
    return chosen_x, chosen_y, chosen_z


#: A part of the grid: the x (column), y (row) and z (sub-grid) positions it shows.
Window = tuple[range, range, range]


def grid_pages(nx: int, ny: int, nz: int, max_cells: int) -> list[Window]:
    """Split an ``nx`` x ``ny`` grid with ``nz`` sub-grids into pages of at most ``max_cells`` cells.

    Whole sub-grids share a page when they fit; a bigger sub-grid is cut into bands of whole
    rows (and a row longer than a page into runs of columns). Every cell is on exactly one page,
    in reading order. Pure.
    """
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1:
        raise _invalid("max_cells", max_cells, "must be a whole number of at least 1")
    nx, ny, nz = max(1, nx), max(1, ny), max(1, nz)
    if nx * ny <= max_cells:
        per = max_cells // (nx * ny)
        return [(range(nx), range(ny), range(z, min(nz, z + per))) for z in range(0, nz, per)]
    width = min(nx, max_cells)
    rows = max(1, max_cells // width)
    pages: list[Window] = []
    for z in range(nz):
        for y in range(0, ny, rows):
            for x in range(0, nx, width):
                pages.append((range(x, min(nx, x + width)), range(y, min(ny, y + rows)), range(z, z + 1)))
    return pages


def render_grid(
    axes: Sequence[Axis],
    cells: Sequence[Any],
    tile_of: Callable[[Any, int, int], "Image.Image | None"],
    *,
    x: str | None = None,
    y: str | None = None,
    z: str | Sequence[str] | None = None,
    thumb: int = THUMB_SIZE,
    window: Window | None = None,
) -> tuple["Image.Image", int]:
    """Draw the contact sheet; return it and how many cells it shows.

    ``cells`` are in product order of ``axes`` (each has ``.coords``, ``.status``, ``.error``,
    ``.request``); ``tile_of(cell, w, h)`` gives a cell's picture fitted to the tile (or None).
    ``window`` draws only those columns, rows and sub-grids (a page of :func:`grid_pages`).
    """
    from PIL import Image, ImageDraw

    ax_x, ax_y, ax_z = resolve_layout(axes, x, y, z)
    index = {a.name: i for i, a in enumerate(axes)}
    by_coords = {tuple(c.coords): c for c in cells}

    all_combos = list(itertools.product(*(range(len(a)) for a in ax_z))) or [()]
    if window is None:
        window = (range(len(ax_x) if ax_x else 1), range(len(ax_y) if ax_y else 1), range(len(all_combos)))
    xs, ys = list(window[0]), list(window[1])
    z_combos = [all_combos[k] for k in window[2]]
    nx, ny = len(xs), len(ys)
    shown = nx * ny * len(z_combos)

    # tile size from the requests' aspect ratios
    sizes = {(c.request.width, c.request.height) for c in cells} or {(1, 1)}
    if len({round(w / h, 3) for w, h in sizes}) == 1:
        w0, h0 = next(iter(sizes))
        tile_w, tile_h = _fit(w0, h0, thumb, thumb)
    else:
        tile_w = tile_h = thumb

    font_size = max(11, min(32, thumb // 11))
    font = _font(font_size)
    line_h = round(font_size * 1.25)
    pad = max(3, thumb // 40)
    gap = max(2, thumb // 64)

    def label(axis: Axis, i: int) -> str:
        return f"{axis.title}: {format_value(axis.values[i])}"

    col_lines = [wrap(label(ax_x, i), font, tile_w - 2 * pad) for i in xs] if ax_x else []
    head_h = (max(len(lines) for lines in col_lines) * line_h + 2 * pad) if col_lines else 0
    row_w_limit = max(thumb, 160)
    row_lines = [wrap(label(ax_y, j), font, row_w_limit - 2 * pad) for j in ys] if ax_y else []
    side_w = 0
    if row_lines:
        widest = max(font.getlength(line) for lines in row_lines for line in lines)
        side_w = int(min(row_w_limit, widest + 2 * pad)) + 1
    body_w = side_w + nx * tile_w + (nx - 1) * gap
    z_titles = [
        wrap("   ".join(label(a, k) for a, k in zip(ax_z, combo)), font, body_w - 2 * pad) if ax_z else []
        for combo in z_combos
    ]
    z_head = [len(t) * line_h + 2 * pad if t else 0 for t in z_titles]
    block_h = [zh + head_h + ny * tile_h + (ny - 1) * gap for zh in z_head]
    total_h = sum(block_h) + (len(z_combos) - 1) * 2 * pad
    sheet = Image.new("RGB", (body_w, max(1, total_h)), _BG)
    draw = ImageDraw.Draw(sheet)

    top = 0
    for combo, title, zh, bh in zip(z_combos, z_titles, z_head, block_h):
        for n, line in enumerate(title):
            draw.text((pad, top + pad + n * line_h), line, fill=_TEXT, font=font)
        for i, lines in enumerate(col_lines):
            cx = side_w + i * (tile_w + gap)
            y0 = top + zh + head_h - pad - len(lines) * line_h
            for n, line in enumerate(lines):
                draw.text((cx + (tile_w - font.getlength(line)) / 2, y0 + n * line_h), line, fill=_TEXT, font=font)
        for row, j in enumerate(ys):
            cy = top + zh + head_h + row * (tile_h + gap)
            if row_lines:
                lines = row_lines[row]
                y0 = cy + (tile_h - len(lines) * line_h) / 2
                for n, line in enumerate(lines):
                    draw.text((side_w - pad - font.getlength(line), y0 + n * line_h), line, fill=_TEXT, font=font)
            for col, i in enumerate(xs):
                cell = by_coords.get(cell_coords(index, ax_x, ax_y, ax_z, i, j, combo))
                cx = side_w + col * (tile_w + gap)
                _draw_cell(sheet, draw, cell, tile_of, cx, cy, tile_w, tile_h, font, line_h, pad)
        top += bh + 2 * pad
    return sheet, shown


def _draw_cell(sheet, draw, cell, tile_of, cx, cy, tile_w, tile_h, font, line_h, pad) -> None:
    if cell is None:
        return
    picture = tile_of(cell, tile_w, tile_h) if cell.status in ("done", "cached") else None
    if picture is not None:
        sheet.paste(picture, (cx + (tile_w - picture.width) // 2, cy + (tile_h - picture.height) // 2))
        return
    failed = cell.status == "failed"
    draw.rectangle((cx, cy, cx + tile_w - 1, cy + tile_h - 1), fill=_FAILED_BG if failed else _PENDING_BG)
    if failed:
        text = f"failed: {cell.error}" if cell.error is not None else "failed"
    elif getattr(cell, "files_missing", None):
        text = "files missing"
    else:
        text = cell.status
    lines = wrap(text, font, tile_w - 2 * pad)
    max_lines = max(1, (tile_h - 2 * pad) // line_h)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1][:-1] + "…"]
    y0 = cy + max(pad, (tile_h - len(lines) * line_h) // 2)
    for n, line in enumerate(lines):
        draw.text((cx + pad, y0 + n * line_h), line, fill=_FAILED_TEXT if failed else _TEXT, font=font)
