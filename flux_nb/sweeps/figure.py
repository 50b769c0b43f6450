"""A sweep as a matplotlib figure with titled axes, for papers and reports (matplotlib loaded lazily)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .plan import Axis, format_value
from .grid import resolve_layout

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["render_figure"]


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
    """One subplot per cell: columns titled with the x values, rows labelled with the y values,
    one sub-figure per combination of the z axes. Failed cells show their error."""
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
    subfigs = fig.subfigures(len(combos), 1, squeeze=False)[:, 0] if len(combos) > 1 else [fig]
    for sub, combo in zip(subfigs, combos):
        grid = sub.subplots(ny, nx, squeeze=False)
        if ax_z:
            sub.suptitle("   ".join(f"{a.title}: {format_value(a.values[k])}" for a, k in zip(ax_z, combo)))
        for j, i in itertools.product(range(ny), range(nx)):
            ax = grid[j][i]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            coords = [0] * len(axes)
            if ax_x:
                coords[index[ax_x.name]] = i
            if ax_y:
                coords[index[ax_y.name]] = j
            for a, k in zip(ax_z, combo):
                coords[index[a.name]] = k
            cell = by_coords.get(tuple(coords))
            if ax_x and j == 0:
                ax.set_title(format_value(ax_x.values[i]), fontsize=10)
            if ax_y and i == 0:
                ax.set_ylabel(format_value(ax_y.values[j]), fontsize=10)
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
