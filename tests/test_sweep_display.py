"""How sweeps look: matplotlib figures with wrapped, named headers; paged inline display."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from flux_nb.errors import FluxValidationError  # noqa: E402
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


def _finished(result, size=(64, 64)):
    """Every cell of a dry-run plan finished with a small generated image (no server needed)."""
    import io

    from PIL import Image

    from flux_nb.result import FluxImage, FluxResult

    for cell in result.cells:
        buffer = io.BytesIO()
        shade = (cell.index * 37) % 256
        Image.new("RGB", size, (shade, 255 - shade, 128)).save(buffer, "JPEG")
        image = FluxImage(buffer.getvalue(), "image/jpeg", *size)
        cell.finish(FluxResult([image], cell.request.seed or 0, cell.request, backend="embedded"))
    result.dry_run = False
    return result


def test_grid_pages_cover_every_cell_once():
    from flux_nb.sweeps.grid import grid_pages

    for nx, ny, nz, per in [(10, 10, 10, 64), (100, 1, 1, 64), (3, 2, 50, 64), (200, 3, 2, 64), (1, 1, 1, 64)]:
        pages = grid_pages(nx, ny, nz, per)
        seen = [(x, y, z) for xs, ys, zs in pages for z in zs for y in ys for x in xs]
        assert sorted(seen) == sorted(itertools.product(range(nx), range(ny), range(nz)))
        assert all(len(xs) * len(ys) * len(zs) <= per for xs, ys, zs in pages)
    assert len(grid_pages(3, 2, 50, 64)) == 5  # whole 3x2 sub-grids, 10 to a page
    with pytest.raises(FluxValidationError) as info:
        grid_pages(1, 1, 1, 0)
    assert info.value.errors[0].field == "max_cells"


def test_a_1000_cell_sweep_pages_inline_and_stays_small(data_dir):
    result = _finished(sweep("a paged fox", steps="1-10", guidance="1-10", seed="1-10", dry_run=True, max_cells=1000))
    assert len(result) == 1000 and all(c.ok for c in result.cells)
    bundle = result._repr_mimebundle_()
    html_text = bundle["text/html"]
    assert len(html_text) < 1_000_000  # one page of thumbnails, never all of them
    assert result.pages == 20  # 10x10 per seed does not fit 64 cells: bands of 6 and 4 rows
    assert "showing 60 of 1000 cells, page 1 of 20" in html_text and ".page(2)</code> the next" in html_text
    page = result.page(2)
    second = page._repr_mimebundle_()["text/html"]
    assert "showing 40 of 1000 cells, page 2 of 20" in second and second != html_text
    assert result.show(page=2)._repr_mimebundle_()["text/html"] == second
    last = result.page(20)._repr_mimebundle_()["text/html"]
    assert "page 20 of 20" in last and ".page(21)" not in last
    assert "(page 2 of 20)" in page._repr_mimebundle_()["text/plain"]
    # a page's grid shows its own rows (4 of 10: guidance 7-10 of seed 1), all 10 columns
    sheet, first = page.grid(thumb=64), result.page(1).grid(thumb=64)
    assert abs(sheet.size[0] - first.size[0]) < 32 and sheet.size[0] > 10 * 64 and sheet.size[1] < first.size[1] * 0.8
    for bad in (0, 21, "2", True):
        with pytest.raises(FluxValidationError, match="from 1 to 20") as info:
            result.page(bad)
        assert info.value.errors[0].field == "page" and info.value.errors[0].value == bad
    total = sum(len(result.page(n)._repr_mimebundle_()["text/html"]) for n in range(1, 21))
    assert total < 8_000_000  # even every page shown stays within a few MB


def test_a_small_sweep_is_one_page_without_a_paging_note(data_dir):
    result = _finished(sweep("a small fox", steps=[1, 2], seed=1, dry_run=True))
    assert result.pages == 1
    html_text = result._repr_mimebundle_()["text/html"]
    assert "page" not in html_text and "data:image/jpeg;base64," in html_text


def test_bad_cell_and_layout_arguments_are_validation_errors_naming_them(data_dir):
    result = _finished(sweep("a {red|blue} fox", guidance="2-3", seed=1, dry_run=True))
    assert result.cell(guidance=3, prompt="a blue fox").request.guidance_scale == 3.0
    with pytest.raises(FluxValidationError) as info:
        result.cell(guidance=9)
    assert info.value.errors[0].field == "guidance" and "2, 3" in str(info.value)
    with pytest.raises(FluxValidationError) as info:
        result.cell(colour="red")
    assert info.value.errors[0].field == "colour" and "guidance_scale" in str(info.value)
    with pytest.raises(FluxValidationError) as info:
        result.grid(x="steps")
    assert info.value.errors[0].field == "x" and info.value.errors[0].value == "steps"
    with pytest.raises(FluxValidationError, match="only once"):
        result.grid(x="guidance", y="guidance_scale")


def test_mosaic_shape_and_cell_coords_are_the_one_place_for_layout_math():
    import inspect

    from flux_nb.sweeps.grid import cell_coords, mosaic_shape, render_grid
    from flux_nb.sweeps.plan import Axis
    from flux_nb.sweeps.result import SweepCell

    assert [mosaic_shape(n) for n in (0, 1, 2, 4, 5, 9, 10)] == [(1, 1), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3)]
    axes = [Axis(name, (1, 2, 3)) for name in ("seed", "guidance_scale", "num_inference_steps")]
    index = {a.name: k for k, a in enumerate(axes)}
    assert cell_coords(index, axes[1], axes[2], [axes[0]], 2, 1, (0,)) == (0, 2, 1)
    assert cell_coords(index, None, None, [], 0, 0, ()) == (0, 0, 0)
    # the parameters nothing passed are gone
    assert "max_cells" not in inspect.signature(render_grid).parameters
    assert "offload" not in inspect.signature(SweepCell.finish).parameters
