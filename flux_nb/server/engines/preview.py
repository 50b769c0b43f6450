"""The ``preview`` engine: deterministic placeholder images, drawn with Pillow in milliseconds.

No model, no GPU, no network: it lets everything in flux-nb (magics, panel, sweeps, the client and
the server) run offline, and makes sweeps *show* their variation. The same request and seed always
give the same bytes, and every parameter changes the picture visibly:

- prompt and seed pick the palette and the shapes (image ``i`` of a job uses ``seed + i``);
- ``num_inference_steps`` is how "denoised" the picture is: each step adds one (finer) shape and
  takes away some blur and grain (1 step: a blurry, grainy sketch; 50: crisp and clean);
- ``guidance_scale`` sets contrast and saturation (3.5 is neutral), over the whole 0..35 range;
- each LoRA adds a tinted pattern (stripes, grid or dots, chosen by its path) whose opacity and
  line width follow ``|scale|`` up to 4 (a negative scale uses the complementary tint);
- ``image_size`` and ``output_format`` are honoured exactly.

Each image is stamped "PREVIEW" with its prompt and key parameters in small text.

Safety checker: when ``enable_safety_checker`` is on and the prompt contains one of the NSFW words
(whole words, any case), ``has_nsfw_concepts`` is true for every image, and, as fal does, the
images are still returned. The words are :data:`DEFAULT_NSFW_WORDS`, plus any listed
(comma-separated) in the ``FLUX_NB_NSFW_WORDS`` environment variable when the engine is created;
``PreviewEngine(nsfw_words=[...])`` replaces the defaults.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import os
import random
import re
import textwrap
import time
from typing import Iterable

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from ...params import LIMITS, FluxRequest
from .base import EngineOutput, GeneratedImage, JobContext

__all__ = ["PreviewEngine", "DEFAULT_NSFW_WORDS", "render_preview", "find_nsfw_words"]

#: Words that make the preview safety checker flag a prompt (extend with FLUX_NB_NSFW_WORDS).
DEFAULT_NSFW_WORDS: tuple[str, ...] = ("nsfw", "nude", "naked", "porn", "gore")

#: Longest side of the low-resolution drawing, upscaled afterwards: keeps any size fast.
_DRAW_SIDE = 320
_JPEG_QUALITY = 90
#: Blur radius (at the drawing size) and grain amplitude (levels) at 1 step; both fall evenly
#: to 0 at the most steps.
_MAX_BLUR = 5.0
_MAX_GRAIN = 45
#: Grain is drawn at 1/_GRAIN_CELL of the drawing size and smoothed up.
_GRAIN_CELL = 6


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def _hsv(h: float, s: float, v: float, alpha: int | None = None) -> tuple[int, ...]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    rgb = (round(r * 255), round(g * 255), round(b * 255))
    return rgb if alpha is None else (*rgb, alpha)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def find_nsfw_words(prompt: str, words: Iterable[str]) -> list[str]:
    """The listed words found in the prompt, as whole words, ignoring case."""
    found = []
    for word in words:
        if word and re.search(r"(?<!\w)" + re.escape(word.lower()) + r"(?!\w)", prompt.lower()):
            found.append(word)
    return found


def _draw_scene(request: FluxRequest, seed: int, size: tuple[int, int]) -> Image.Image:
    """The picture without text, at ``size`` (the low-resolution drawing size)."""
    w, h = size
    prompt_hash = _digest("prompt", request.prompt)
    base_hue = prompt_hash[0] / 255
    rng = _rng("scene", request.prompt, seed)
    hue = base_hue + rng.uniform(-0.12, 0.12)

    # background: a gradient between two palette colours, direction picked by the seed
    top, bottom = _hsv(hue, 0.55, 0.35 + rng.random() * 0.3), _hsv(hue + 0.5 * rng.random(), 0.6, 0.6 + rng.random() * 0.3)
    mask = Image.linear_gradient("L").resize((w, h)) if rng.random() < 0.5 else Image.linear_gradient("L").rotate(90).resize((w, h))
    image = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), mask)

    # shapes: one more per step; the first ones are the same for any step count, so a steps sweep
    # looks like one picture being refined
    draw = ImageDraw.Draw(image, "RGBA")
    count = 2 + request.num_inference_steps
    for i in range(count):
        shape_hue = hue + rng.choice((0.0, 0.08, 0.33, 0.5, 0.66)) + rng.uniform(-0.04, 0.04)
        colour = _hsv(shape_hue, 0.5 + rng.random() * 0.5, 0.5 + rng.random() * 0.5, 110 + rng.randrange(120))
        cx, cy = rng.random() * w, rng.random() * h
        # later steps add finer detail: smaller shapes
        r = (0.05 + rng.random() * 0.25) * min(w, h) * (1.0 if i < 3 else 0.7 / (1 + i / 12))
        box = (cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            points = [(cx + r * rng.uniform(-1, 1), cy + r * rng.uniform(-1, 1)) for _ in range(3)]
            draw.polygon(points, fill=colour)

    # few steps: soft, blurry and grainy, like a half-denoised picture; cleaner with every step
    left = _steps_left(request.num_inference_steps)
    if left > 0:
        image = image.filter(ImageFilter.GaussianBlur(left * _MAX_BLUR * (w / _DRAW_SIDE)))
        # coarse grain around 0, added to every channel (the colours stay); coarse, because fine
        # grain would triple the size of every JPEG
        amplitude = left * _MAX_GRAIN / 128
        gw, gh = max(1, w // _GRAIN_CELL), max(1, h // _GRAIN_CELL)
        # its own generator, so every step count has the same grain, only fainter
        grain_rng = _rng("grain", request.prompt, seed)
        noise = Image.frombytes("L", (gw, gh), grain_rng.randbytes(gw * gh)).resize((w, h), Image.Resampling.BICUBIC)
        noise = noise.point(lambda v: round(128 + (v - 128) * amplitude))
        image = ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), offset=-128)

    contrast, colour = _guidance_factors(request.guidance_scale)
    image = ImageEnhance.Contrast(image).enhance(contrast)
    image = ImageEnhance.Color(image).enhance(colour)

    for index, lora in enumerate(request.loras):
        image = _lora_overlay(image, lora.path, lora.scale, index)
    return image


def _steps_left(steps: int) -> float:
    """How far from fully "denoised" a step count is: 1.0 at 1 step, falling evenly to 0 at the most."""
    most = LIMITS["num_inference_steps"][1]
    return max(0.0, (most - steps) / (most - 1))


def _guidance_factors(g: float) -> tuple[float, float]:
    """(contrast, saturation) for a guidance scale: 3.5 is neutral (1, 1), 0 is washed out.

    Above 3.5 both keep growing evenly to the top of the range (harsh and garish at 35, as a
    real model overcooks), so that every guidance value gives its own picture.
    """
    if g <= 3.5:
        return 0.35 + g * 0.65 / 3.5, 0.2 + g * 0.8 / 3.5
    excess = (g - 3.5) / (LIMITS["guidance_scale"][1] - 3.5)  # 0 at 3.5, 1 at the top
    return 1.0 + 1.2 * excess, 1.0 + 2.0 * excess


def _lora_overlay(image: Image.Image, path: str, scale: float, index: int) -> Image.Image:
    """A tinted pattern picked by the LoRA's path, as strong as its scale (all the way to 4)."""
    w, h = image.size
    key = _digest("lora", path)
    tint_hue = key[1] / 255 + (0.5 if scale < 0 else 0.0)
    strength = min(1.0, abs(scale) / LIMITS["lora_scale"][1])
    alpha = round(strength * 220)
    if alpha == 0:
        return image
    colour = _hsv(tint_hue, 0.9, 0.95, alpha)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pitch = max(4, round(min(w, h) / (6 + key[2] % 10)))
    thickness = max(1, round(pitch * (0.1 + 0.35 * strength)))
    kind = (key[3] + index) % 3
    if kind == 0:  # diagonal stripes
        for x in range(-h, w + h, pitch):
            draw.line([(x, 0), (x + h, h)], fill=colour, width=thickness)
    elif kind == 1:  # grid
        for x in range(0, w, pitch):
            draw.line([(x, 0), (x, h)], fill=colour, width=thickness)
        for y in range(0, h, pitch):
            draw.line([(0, y), (w, y)], fill=colour, width=thickness)
    else:  # dots
        r = thickness
        for y in range(pitch // 2, h, pitch):
            for x in range(pitch // 2, w, pitch):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _stamp(image: Image.Image, request: FluxRequest, seed: int) -> None:
    """The PREVIEW mark, the prompt and the key parameters, in small text, at full resolution."""
    w, h = image.size
    if w < 48 or h < 24:
        return  # too small for any legible text
    size = max(8, min(28, w // 42))
    font, big = _font(size), _font(max(10, min(48, w // 18)))
    draw = ImageDraw.Draw(image, "RGBA")

    label = "PREVIEW"
    left, top, right, bottom = draw.textbbox((0, 0), label, font=big)
    pad = max(2, size // 3)
    draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0, 170))
    draw.text((pad - left, pad - top), label, font=font if w < 120 else big, fill=(255, 255, 255, 255))

    params = f"seed {seed} · steps {request.num_inference_steps} · cfg {request.guidance_scale:g} · {request.width}x{request.height}"
    if request.loras:
        params += " · " + ", ".join(f"{lora.path.rsplit('/', 1)[-1][:24]}@{lora.scale:g}" for lora in request.loras)
    chars = max(8, int(w / (size * 0.55)))
    lines = textwrap.wrap(request.prompt, chars, max_lines=3, placeholder=" …") + textwrap.wrap(params, chars, max_lines=2)
    line_h = size + max(2, size // 4)
    block = line_h * len(lines) + 2 * pad
    if block > h * 0.6:
        lines = lines[-1:]  # small images: keep the parameters only
        block = line_h + 2 * pad
    draw.rectangle((0, h - block, w, h), fill=(0, 0, 0, 150))
    for i, line in enumerate(lines):
        draw.text((pad, h - block + pad + i * line_h), line, font=font, fill=(255, 255, 255, 235))


def render_preview(request: FluxRequest, seed: int, *, stamp: bool = True) -> Image.Image:
    """One preview image (RGB, at the request's size) for ``seed``.

    ``stamp=False`` leaves out the PREVIEW mark and the caption: the picture alone, which is what
    tests compare to show that a parameter changes the drawing and not just its caption.
    """
    w, h = request.width, request.height
    ratio = min(1.0, _DRAW_SIDE / max(w, h))
    small = (max(1, round(w * ratio)), max(1, round(h * ratio)))
    image = _draw_scene(request, seed, small)
    if small != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    if stamp:
        _stamp(image, request, seed)
    return image


def _encode(image: Image.Image, output_format: str) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=1)  # fast; previews need no small files
        return buffer.getvalue(), "image/png"
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue(), "image/jpeg"


class PreviewEngine:
    """Deterministic placeholder images; see the module docstring for what each parameter does."""

    name = "preview"
    max_concurrency: int | None = None

    def __init__(self, nsfw_words: Iterable[str] | None = None):
        if nsfw_words is None:
            extra = os.environ.get("FLUX_NB_NSFW_WORDS", "")
            words = [*DEFAULT_NSFW_WORDS, *(w.strip() for w in extra.split(","))]
        else:
            words = list(nsfw_words)
        self.nsfw_words: tuple[str, ...] = tuple(dict.fromkeys(w.lower() for w in words if w and w.strip()))

    def __repr__(self) -> str:
        return f"PreviewEngine(nsfw_words={list(self.nsfw_words)!r})"

    def check(self, request: FluxRequest) -> None:
        """The preview engine can draw any valid request."""

    def generate(self, request: FluxRequest, seed: int, ctx: JobContext) -> EngineOutput:
        flagged = request.enable_safety_checker and bool(find_nsfw_words(request.prompt, self.nsfw_words))
        images: list[GeneratedImage] = []
        started = time.perf_counter()
        for i in range(request.num_images):
            ctx.check_cancelled()
            t0 = time.perf_counter()
            data, content_type = _encode(render_preview(request, seed + i), request.output_format)
            images.append(GeneratedImage(data, content_type, request.width, request.height))
            ctx.log(
                f"preview image {i + 1}/{request.num_images}: seed {seed + i}, {request.width}x{request.height}, "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms"
            )
        if flagged:
            ctx.log("safety checker: NSFW concepts found in the prompt (images returned anyway)")
        return EngineOutput(
            images=images,
            has_nsfw_concepts=[flagged] * len(images),
            timings={"inference": time.perf_counter() - started},
        )

    def close(self) -> None:
        """Nothing to free."""
