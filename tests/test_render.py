"""How results display in notebooks: thumbnail grid, contact sheet, NSFW handling, notebook size."""

from __future__ import annotations

import base64
import functools
import io
import re
from pathlib import Path

import nbformat
import pytest
from PIL import Image, ImageFilter

from flux_nb import render
from flux_nb.params import FluxRequest
from flux_nb.result import FluxImage, FluxResult


@functools.lru_cache(maxsize=None)
def detailed_jpeg(seed: int, size=(1024, 768)) -> bytes:
    """A hard-to-compress image (fractal, noise, gradient), so sizes measured are a worst case."""
    width, height = size
    fractal = Image.effect_mandelbrot(size, (-2 + seed * 0.1, -1.2, 1, 1.2), 100)
    noise = Image.effect_noise(size, 60).filter(ImageFilter.GaussianBlur(1))
    gradient = Image.linear_gradient("L").resize(size)
    buf = io.BytesIO()
    Image.merge("RGB", (fractal, noise, gradient)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def plain_png(color="red", size=(640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def make_result(n=4, nsfw=(), prompt="a red fox in snow", **fields) -> FluxResult:
    images = [
        FluxImage(detailed_jpeg(i), "image/jpeg", 1024, 768, nsfw=i in nsfw) for i in range(n)
    ]
    request = FluxRequest(prompt, num_images=n, **fields)
    return FluxResult(images, seed=42, request=request, has_nsfw_concepts=[i in nsfw for i in range(n)])


def data_uris(html: str) -> list[Image.Image]:
    out = []
    for b64 in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html):
        out.append(Image.open(io.BytesIO(base64.b64decode(b64))))
    return out


@pytest.fixture(autouse=True)
def default_options():
    render.configure(**{f: getattr(render.RenderOptions(), f) for f in render.RenderOptions.__dataclass_fields__})
    yield
    render.configure(**{f: getattr(render.RenderOptions(), f) for f in render.RenderOptions.__dataclass_fields__})


def test_bundle_has_html_grid_png_sheet_and_text():
    result = make_result(n=2)
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert bundle["text/plain"] == repr(result)
    html = bundle["text/html"]
    assert "seed 42 #1/2" in html and "seed 42 #2/2" in html
    assert "28 steps · CFG 3.5 · 1024×768" in html
    images = data_uris(html)
    thumbs = [im for im in images if max(im.size) == 256]
    previews = [im for im in images if max(im.size) == 512]
    assert len(thumbs) == 2 and len(previews) == 2 and len(images) == 4
    sheet = Image.open(io.BytesIO(bundle["image/png"]))
    assert sheet.format == "PNG" and sheet.width <= 2 * 128 + 4 and sheet.height <= 128


def test_four_1024x768_images_add_well_under_half_a_megabyte_to_a_notebook():
    bundle = make_result(n=4)._repr_mimebundle_()
    data = {k: (v if isinstance(v, str) else base64.b64encode(v).decode()) for k, v in bundle.items()}
    output = nbformat.v4.new_output("display_data", data=data)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%%flux -n 4", outputs=[output])])
    size = len(nbformat.writes(notebook).encode())
    print(f"4 detailed 1024x768 images add {size / 1024:.0f} KB to the notebook")
    assert size < 300_000


def test_thumbnails_are_cached_per_image(monkeypatch):
    result = make_result(n=1)
    calls = []
    real = render._decode
    monkeypatch.setattr(render, "_decode", lambda data, longest: calls.append(longest) or real(data, longest))
    first = result._repr_mimebundle_()
    decoded = len(calls)
    second = result._repr_mimebundle_()
    assert first == second and len(calls) == decoded  # nothing decoded again
    assert render.thumbnail(result.images[0]) is render.thumbnail(result.images[0])


def test_thumbnail_size_is_configurable_and_validated():
    result = make_result(n=1)
    render.configure(thumbnail_size=128)
    assert any(max(im.size) == 128 for im in data_uris(render.result_html(result)))
    assert max(data_uris(render.result_html(result, render.RenderOptions(thumbnail_size=64)))[0].size) == 64
    with pytest.raises(ValueError, match="thumbnail_size=3"):
        render.configure(thumbnail_size=3)
    with pytest.raises(ValueError, match="thumb=100: unknown render option"):
        render.configure(thumb=100)


def test_nsfw_images_are_blurred_mosaics_with_a_reveal():
    result = make_result(n=2, nsfw={1})
    html = render.result_html(result)
    assert html.count("NSFW · click for how to view") == 1 and "reveal</span>" not in html
    assert "fluxnb-nsfw" in html and "filter:blur" in html
    assert "flux_nb.render.reveal(result)" in html
    clear_thumb = base64.b64encode(render.thumbnail(result.images[1])).decode()
    assert clear_thumb not in html  # no clear copy lands in the notebook
    images = data_uris(html)
    assert len(images) == 3  # the flagged image has no enlarged view
    mosaic = images[-1].convert("RGB")
    # A 16-cell mosaic: shrinking and re-growing it changes almost nothing.
    regrown = mosaic.resize((16, 12), Image.Resampling.BOX).resize(mosaic.size, Image.Resampling.NEAREST)
    diff = sum(abs(a - b) for a, b in zip(mosaic.tobytes(), regrown.tobytes())) / len(mosaic.tobytes())
    assert diff < 6
    revealed = render.reveal(result)._repr_mimebundle_()["text/html"]
    assert clear_thumb in revealed and "NSFW" not in revealed


def test_show_displays_through_ipython(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    result = make_result(n=1, nsfw={0})
    render.show(result, reveal_nsfw=True)
    assert isinstance(shown[0], render.ResultView) and shown[0].options.reveal_nsfw


def test_full_size_is_a_link_only_under_the_working_folder_else_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = make_result(n=2)
    html = render.result_html(result)
    assert "<a " not in html and "result[1].to_pil()" in html  # not saved yet: how to get it in Python
    result.save("my out")
    html = render.result_html(result)
    assert f'href="my%20out/{result.images[0].path.name}"' in html
    assert "file://" not in html
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    html = render.result_html(result)
    # a browser will not open file:// from a Jupyter page: the path as text, and the Python
    assert "file://" not in html and "<a " not in html
    assert f"saved at <code>{result.images[0].path}</code>" in html.replace("&#x27;", "'")
    assert "result[0].to_pil()" in html and 'result.save("out")' in html


def test_prompt_is_escaped_and_png_sources_work():
    image = FluxImage(plain_png(), "image/png", 640, 480)
    result = FluxResult([image], seed=1, request=FluxRequest("<script>alert(1)</script> & co"))
    html = render.result_html(result)
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    thumbs = data_uris(html)
    assert thumbs[0].size == (256, 192)
    assert thumbs[0].convert("RGB").getpixel((10, 10))[0] > 200  # still red


def test_rgba_png_and_empty_result():
    buf = io.BytesIO()
    Image.new("RGBA", (100, 50), (0, 0, 255, 0)).save(buf, "PNG")
    result = FluxResult([FluxImage(buf.getvalue(), "image/png", 100, 50)], seed=1, request=FluxRequest("x"))
    assert data_uris(render.result_html(result))[0].convert("RGB").getpixel((5, 5)) == (255, 255, 255)
    empty = FluxResult([], seed=1, request=FluxRequest("x"))
    bundle = render.result_mimebundle(empty)
    assert "no images" in bundle["text/html"] and "image/png" not in bundle


def test_bad_view_options_are_validation_errors_naming_the_option():
    from flux_nb.errors import FluxValidationError

    result = make_result(n=1)
    with pytest.raises(FluxValidationError) as info:
        render.view(result, bad=1)
    error = info.value.errors[0]
    assert error.field == "bad" and error.value == 1
    assert "thumbnail_size" in error.message and "reveal_nsfw" in error.message  # the allowed ones
    with pytest.raises(FluxValidationError) as info:
        render.view(result, thumbnail_size=3)
    assert info.value.errors[0].field == "thumbnail_size"
    with pytest.raises(FluxValidationError, match="thumb=100"):
        render.configure(thumb=100)
