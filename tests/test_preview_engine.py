"""The preview engine: deterministic, every parameter visible, formats, sizes, NSFW words, cancel."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from flux_nb.params import FluxRequest
from flux_nb.server.engines import load_engine
from flux_nb.server.engines.base import JobCancelled, JobContext
from flux_nb.server.engines.preview import DEFAULT_NSFW_WORDS, PreviewEngine, find_nsfw_words, render_preview

BASE = dict(prompt="a red fox in snow", seed=7, image_size="square")


def ctx(logs: list | None = None, cancelled=lambda: False) -> JobContext:
    sink = logs if logs is not None else []
    return JobContext("test", log=sink.append, is_cancelled=cancelled, resolve_file=lambda p: p)


def generate(engine=None, **fields):
    request = FluxRequest(**{**BASE, **fields})
    return (engine or PreviewEngine()).generate(request, request.seed, ctx())


def picture(**fields) -> Image.Image:
    """The image area above the text block, where only the drawing (not the caption) differs."""
    request = FluxRequest(**{**BASE, **fields})
    image = render_preview(request, request.seed)
    w, h = image.size
    return image.crop((0, h // 8, w, h * 5 // 8))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_same_request_and_seed_same_bytes():
    a, b = generate(), generate()
    assert [i.data for i in a.images] == [i.data for i in b.images]


def test_num_images_uses_seed_plus_i():
    out = generate(num_images=3)
    assert len(out.images) == 3 and len({i.data for i in out.images}) == 3
    second = generate(seed=8).images[0].data
    assert out.images[1].data == second


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 8},
        {"prompt": "a blue whale in the sea"},
        {"num_inference_steps": 8},
        {"num_inference_steps": 50},
        {"guidance_scale": 1.0},
        {"guidance_scale": 12.0},
        {"loras": [{"path": "https://example.test/a.safetensors", "scale": 1.0}]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_parameter_visibly_changes_the_picture(change):
    # compared away from the caption: the drawing itself must change, not just the text
    assert mean_difference(picture(), picture(**change)) > 2.0


def test_each_lora_and_its_scale_change_the_picture():
    one = [{"path": "https://example.test/a.safetensors", "scale": 1.0}]
    other = [{"path": "https://example.test/b.safetensors", "scale": 1.0}]
    weaker = [{"path": "https://example.test/a.safetensors", "scale": 0.3}]
    both = one + other
    pics = [picture(loras=x) for x in (one, other, weaker, both)]
    for i in range(len(pics)):
        for j in range(i + 1, len(pics)):
            assert mean_difference(pics[i], pics[j]) > 1.0, (i, j)


def scene(**fields) -> Image.Image:
    """The whole picture without its PREVIEW mark and caption (which name the parameters)."""
    request = FluxRequest(**{**BASE, **fields})
    return render_preview(request, request.seed, stamp=False)


def assert_each_differs(pictures: dict, pairs, least: float) -> None:
    for a, b in pairs:
        difference = mean_difference(pictures[a], pictures[b])
        assert difference > least, f"{a!r} and {b!r} give (almost) the same picture: mean difference {difference:.3f}"


def test_every_step_count_changes_the_picture():
    # one more step is one more shape, a little less blur and grain: no two neighbours alike
    pictures = {steps: scene(num_inference_steps=steps) for steps in range(1, 51)}
    assert_each_differs(pictures, zip(range(1, 50), range(2, 51)), 0.2)


def test_every_guidance_value_changes_the_picture():
    values = [i / 2 for i in range(71)]  # 0, 0.5, ..., 35
    pictures = {g: scene(guidance_scale=g) for g in values}
    assert_each_differs(pictures, zip(values, values[1:]), 0.1)
    assert len({p.tobytes() for p in pictures.values()}) == len(values)


def test_every_lora_scale_changes_the_picture():
    scales = list(range(-4, 5))
    pictures = {s: scene(loras=[{"path": "https://example.test/a.safetensors", "scale": s}]) for s in scales}
    assert_each_differs(pictures, [(a, b) for i, a in enumerate(scales) for b in scales[i + 1:]], 2.0)


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024), (1, 1), (37, 2000), (640, 360)])
def test_sizes_are_exact(size):
    out = generate(image_size={"width": size[0], "height": size[1]})
    image = Image.open(io.BytesIO(out.images[0].data))
    assert image.size == size == (out.images[0].width, out.images[0].height)


def test_formats():
    jpeg = generate(output_format="jpeg").images[0]
    png = generate(output_format="png").images[0]
    assert jpeg.content_type == "image/jpeg" and jpeg.data[:3] == b"\xff\xd8\xff"
    assert png.content_type == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png.data)).format == "PNG"


def test_preview_mark_and_caption_are_drawn():
    # the top-left label and the bottom caption are darkened boxes with light text
    image = render_preview(FluxRequest(**BASE), 7).convert("L")
    w, h = image.size
    label = image.crop((0, 0, w // 6, h // 20))
    caption = image.crop((0, h - h // 12, w // 2, h))
    for region in (label, caption):
        low, high = region.getextrema()
        assert low < 60 and high > 200


def test_nsfw_words(monkeypatch):
    assert set(DEFAULT_NSFW_WORDS) >= {"nsfw", "nude", "gore"}
    assert find_nsfw_words("A NUDE figure", DEFAULT_NSFW_WORDS) == ["nude"]
    assert find_nsfw_words("gorent and denuded", DEFAULT_NSFW_WORDS) == []  # whole words only
    flagged = generate(prompt="nsfw test", num_images=2)
    assert flagged.has_nsfw_concepts == [True, True] and len(flagged.images) == 2  # still returned
    assert generate(prompt="nsfw test", enable_safety_checker=False).has_nsfw_concepts == [False]
    assert generate().has_nsfw_concepts == [False]
    monkeypatch.setenv("FLUX_NB_NSFW_WORDS", "banana, kiwi")
    engine = PreviewEngine()
    assert generate(engine, prompt="a banana").has_nsfw_concepts == [True]
    assert generate(engine, prompt="a nude").has_nsfw_concepts == [True]
    custom = PreviewEngine(nsfw_words=["cat"])
    assert generate(custom, prompt="a cat").has_nsfw_concepts == [True]
    assert generate(custom, prompt="a nude").has_nsfw_concepts == [False]


def test_logs_a_line_per_image_and_reports_timings():
    logs: list[str] = []
    request = FluxRequest(**{**BASE, "num_images": 2})
    out = PreviewEngine().generate(request, 7, ctx(logs))
    assert sum("preview image" in line for line in logs) == 2
    assert out.timings["inference"] >= 0


def test_cancel_stops_between_images():
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(JobCancelled):
        PreviewEngine().generate(FluxRequest(**{**BASE, "num_images": 3}), 7, ctx(cancelled=cancelled))


def test_registry():
    engine = load_engine("preview")
    assert engine.name == "preview" and engine.max_concurrency is None
    with pytest.raises(ValueError, match="unknown engine.*preview"):
        load_engine("dalle")
