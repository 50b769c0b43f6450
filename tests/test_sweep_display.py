"""How sweeps look: matplotlib figures with wrapped, named headers; paged inline display."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from flux_nb.sweeps import sweep  # noqa: E402
from flux_nb.sweeps.figure import wrap_label  # noqa: E402

LONG = [
    "a very detailed oil painting of a red fox sitting in deep fresh snow under a pale winter sky",
    "a watercolor sketch of a lighthouse on a rocky coast at dusk with seagulls and crashing waves",
    "an isometric pixel-art city block at night with neon signs, rain puddles and tiny pedestrians",
]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_figure_wraps_long_column_titles_and_names_the_axes(data_dir):
    result = sweep(LONG, steps=[4, 8], seed=1, dry_run=True)
    figure = result.figure(cell_inches=2.0)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)  # what a notebook does when it shows the figure
    canvas.draw()
    renderer = canvas.get_renderer()
    titled = [ax for ax in figure.axes if ax.get_title()]
    labelled = [ax for ax in figure.axes if ax.get_ylabel()]
    assert len(titled) == 3 and len(labelled) == 2
    assert all(ax.get_title().startswith("prompt: ") for ax in titled)
    assert [ax.get_ylabel() for ax in labelled] == ["steps: 4", "steps: 8"]
    assert all("\n" in ax.get_title() for ax in titled)  # wrapped
    boxes = [ax.title.get_window_extent(renderer) for ax in titled]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), "column titles overlap"
    for ax, box in zip(titled, boxes):
        cell = ax.get_window_extent(renderer)
        assert box.width <= cell.width * 1.1  # each title fits over its own column
    # the whole prompt is there, up to the line limit
    words = " ".join(titled[0].get_title().split())
    assert words.startswith("prompt: a very detailed oil painting")


def test_wrap_label_limits_width_and_lines():
    text = wrap_label("word " * 200, inches=2.0, fontsize=10)
    lines = text.split("\n")
    assert len(lines) == 4 and lines[-1].endswith("…") and max(map(len, lines)) <= 24
    assert wrap_label("short", 2.0, 10) == "short"
