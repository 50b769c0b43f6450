"""A sweep as a matplotlib figure with titled axes, for papers and reports (matplotlib loaded lazily)."""

from __future__ import annotations

import itertools
import textwrap
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .plan import Axis, format_value
from .grid import cell_coords, resolve_layout

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["render_figure", "wrap_label"]

#: Points per inch, and the average width of a character as a share of the font size.
_POINTS = 72
_CHAR_WIDTH = 0.6
#: Header lines kept before a long label is cut with an ellipsis.
MAX_LABEL_LINES = 4


def wrap_label(text: str, inches: float, fontsize: float, max_lines: int = MAX_LABEL_LINES) -> str:
    """``text`` wrapped to fit ``inches`` at ``fontsize`` points, at most ``max_lines`` lines. Pure."""
    width = max(6, int(inches * _POINTS / (fontsize * _CHAR_WIDTH)))
    lines = textwrap.wrap(str(text), width, max_lines=max_lines, placeholder=" …") or [""]
    return "\n".join(lines)


def render_figure(
    axes: Sequence[Axis],
    cells: Sequence[Any],
    tile_of: Callable[[Any, int, int], Any],
    *,
    x: str | None = None,
    y: str | None = None,
    z: str | Sequence[str] | None = None,
    thumb: int = 384,
    cell_inches: float = 2.0,
    title: str | None = None,
) -> "Figure":
    """One subplot per cell: columns titled ``axis: value`` for the x values, rows labelled the same
    way for the y values (long labels such as prompts wrapped to the cell), one sub-figure per
    combination of the z axes. Failed cells show their error."""
    import matplotlib.pyplot as plt

    ax_x, ax_y, ax_z = resolve_layout(axes, x, y, z)
    index = {a.name: i for i, a in enumerate(axes)}
    by_coords = {tuple(c.coords): c for c in cells}
    nx = len(ax_x) if ax_x else 1
    ny = len(ax_y) if ax_y else 1
    combos = list(itertools.product(*(range(len(a)) for a in ax_z))) or [()]
    w0, h0 = (cells[0].request.width, cells[0].request.height) if cells else (1, 1)
    aspect = h0 / w0
    fig = plt.figure(
        figsize=(cell_inches * nx + 0.8, (cell_inches * aspect * ny + 0.6) * len(combos) + 0.4),
        layout="constrained",
    )
    fontsize = 10
    col_width = cell_inches * 0.95
    row_height = cell_inches * aspect * 0.95
    subfigs = fig.subfigures(len(combos), 1, squeeze=False)[:, 0] if len(combos) > 1 else [fig]
    for sub, combo in zip(subfigs, combos):
        grid = sub.subplots(ny, nx, squeeze=False)
        if ax_z:
            heading = "   ".join(f"{a.title}: {format_value(a.values[k])}" for a, k in zip(ax_z, combo))
            sub.suptitle(wrap_label(heading, cell_inches * nx, 12))
        for j, i in itertools.product(range(ny), range(nx)):
            ax = grid[j][i]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            cell = by_coords.get(cell_coords(index, ax_x, ax_y, ax_z, i, j, combo))
            if ax_x and j == 0:
                label = f"{ax_x.title}: {format_value(ax_x.values[i])}"
                ax.set_title(wrap_label(label, col_width, fontsize), fontsize=fontsize)
            if ax_y and i == 0:
                label = f"{ax_y.title}: {format_value(ax_y.values[j])}"
                ax.set_ylabel(wrap_label(label, row_height, fontsize), fontsize=fontsize)
            if cell is None:
                continue
            picture = tile_of(cell, thumb, round(thumb * aspect)) if cell.status in ("done", "cached") else None
            if picture is not None:
                ax.imshow(picture)
            else:
                text = f"failed:\n{cell.error}" if cell.status == "failed" else cell.status
                if cell.status != "failed" and getattr(cell, "files_missing", None):
                    text = "files missing"
                ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=8,
                        color="darkred" if cell.status == "failed" else "black", transform=ax.transAxes)
    heading = title
    if heading is None:
        parts = []
        if ax_x:
            parts.append(f"columns: {ax_x.title}")
        if ax_y:
            parts.append(f"rows: {ax_y.title}")
        heading = ", ".join(parts) or None
    if heading:
        fig.suptitle(heading)
    # returned, not shown: the notebook displays the returned figure once
    plt.close(fig)
    return fig
