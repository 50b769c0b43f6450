"""Embedded image metadata: A1111 infotext, flux-nb JSON records, PNG chunks, JPEG Exif, saving."""

from __future__ import annotations

import io
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from flux_nb.errors import FluxValidationError
from flux_nb.metadata import (
    _jpeg_segments,
    _png_chunks,
    embed_metadata,
    infotext,
    parse_infotext,
    read_info,
    read_metadata,
    request_from_infotext,
    save_result,
)
from flux_nb.params import FluxRequest
from flux_nb.result import FluxImage, FluxResult


def encode(fmt: str, size=(64, 48), **save) -> bytes:
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def make_result(prompt="a red fox in snow", fmt="JPEG", n=1, seed=42, **fields) -> FluxResult:
    ctype = "image/png" if fmt == "PNG" else "image/jpeg"
    request = FluxRequest(prompt, num_images=n, **fields)
    images = [FluxImage(encode(fmt), ctype, 64, 48) for _ in range(n)]
    return FluxResult(images, seed=seed, request=request, request_id="req-1", backend="test")


def test_infotext_a1111_form():
    request = FluxRequest("a red fox", steps=28, guidance=3.5, size="landscape_4_3")
    text = infotext(request, 42)
    prompt, params = text.split("\n")
    assert prompt == "a red fox"
    assert params.startswith("Steps: 28, CFG scale: 3.5, Seed: 42, Size: 1024x768, ")
    assert "Model: flux-lora" in params and "Format: jpeg" in params


def test_infotext_lists_loras_batch_and_options():
    request = FluxRequest(
        "x", loras=[{"path": "https://h.example/a.safetensors", "scale": 0.8}, "org/repo"],
        num_images=3, output_format="png", enable_safety_checker=False, acceleration="regular", size="640x480",
    )
    params = parse_infotext(infotext(request, 7, index=2))["params"]
    assert params["LoRAs"] == "https://h.example/a.safetensors:0.8, org/repo:1"
    assert params["Batch size"] == "3" and params["Batch pos"] == "2"
    assert params["Format"] == "png" and params["Safety checker"] == "off"
    assert params["Acceleration"] == "regular" and params["Size"] == "640x480"


def test_request_from_infotext_round_trip():
    request = FluxRequest(
        "a fox, in \"snow\"\nsecond line", seed=9, steps=12, guidance=2.25, size="square",
        loras=[{"path": "https://h.example/x:y.safetensors", "scale": 0.5}], n=2, output_format="png",
    )
    parsed, index = request_from_infotext(infotext(request, 9, index=1))
    assert parsed == request
    assert index == 1


def test_request_from_other_tools_infotext():
    # What Forge writes for a Flux image: extra keys are ignored, Distilled CFG Scale is the guidance.
    text = (
        "a lighthouse at dusk\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, "
        "Seed: 1234, Size: 896x1152, Model hash: abc, Model: flux1-dev, Version: f2"
    )
    request, index = request_from_infotext(text)
    assert request.prompt == "a lighthouse at dusk"
    assert (request.num_inference_steps, request.guidance_scale, request.seed) == (20, 3.5, 1234)
    assert request.size == (896, 1152) and index is None


def test_png_embed_keeps_pixels_and_adds_chunks_after_ihdr():
    result = make_result(fmt="PNG")
    original = result.images[0].data
    data = embed_metadata(original, "image/png", result, 0)
    chunks = _png_chunks(data)
    assert [kind for kind, _ in chunks[:3]] == [b"IHDR", b"tEXt", b"tEXt"]
    # every original chunk is still there, byte for byte (nothing re-encoded)
    assert [c for c in chunks if c[0] not in (b"tEXt", b"iTXt")] == _png_chunks(original)
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # CRCs are checked while loading
        assert image.info["parameters"] == infotext(result.reproduce_request, 42, index=0)
        record = json.loads(image.info["flux_nb"])
    assert record["request"]["seed"] == 42 and record["index"] == 0 and record["version"]
    assert FluxRequest.from_dict(record["request"]) == result.reproduce_request


def test_png_embed_replaces_earlier_metadata_and_keeps_other_text():
    result = make_result(fmt="PNG")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "old prompt\nSteps: 1, CFG scale: 1, Seed: 1")
    info.add_text("Comment", "keep me")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    data = embed_metadata(embed_metadata(buf.getvalue(), "image/png", result, 0), "image/png", result, 0)
    keywords = [payload.split(b"\0")[0] for kind, payload in _png_chunks(data) if kind == b"tEXt"]
    assert sorted(keywords) == [b"Comment", b"flux_nb", b"parameters"]
    assert read_metadata(data) == result.reproduce_request


def test_png_non_latin_prompt_uses_itxt():
    result = make_result("un renard roux ✓ 狐狸", fmt="PNG")
    data = embed_metadata(result.images[0].data, "image/png", result, 0)
    assert any(kind == b"iTXt" for kind, _ in _png_chunks(data))
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["parameters"].startswith("un renard roux ✓ 狐狸\n")
    assert read_metadata(data).prompt == "un renard roux ✓ 狐狸"


def test_jpeg_embed_keeps_scan_data_and_writes_exif():
    result = make_result()
    original = result.images[0].data
    data = embed_metadata(original, "image/jpeg", result, 0)
    segments, scan = _jpeg_segments(data)
    assert scan == _jpeg_segments(original)[1]  # compressed image data untouched
    assert [m for m, _ in segments[:2]] == [0xE0, 0xE1]  # after the JFIF header
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        exif = image.getexif().get_ifd(0x8769)
    comment = exif[0x9286]
    assert comment[:8] == b"ASCII\0\0\0"
    assert comment[8:].decode() == infotext(result.reproduce_request, 42, index=0)
    info = read_info(data)
    assert info["source"] == "flux_nb" and info["format"] == "jpeg"
    assert info["request"] == result.reproduce_request


def test_jpeg_unicode_comment_and_existing_exif_replaced():
    result = make_result("café ✓")
    exif = Image.Exif()
    exif[0x010F] = "OldCamera"
    data = embed_metadata(encode("JPEG", exif=exif.tobytes()), "image/jpeg", result, 0)
    segments, _ = _jpeg_segments(data)
    assert sum(1 for m, p in segments if m == 0xE1 and p.startswith(b"Exif\0\0")) == 1
    with Image.open(io.BytesIO(data)) as image:
        raw = image.getexif().get_ifd(0x8769)[0x9286]
        assert 0x010F not in image.getexif()  # the old Exif is gone
    assert raw[:8] == b"UNICODE\0"
    info = read_info(data)
    assert info["infotext"].startswith("café ✓\n")
    assert info["request"].prompt == "café ✓"


def test_falls_back_to_infotext_without_record():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a quiet harbour\nSteps: 30, CFG scale: 4, Seed: 77, Size: 512x512, Model: flux-lora")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    details = read_info(buf.getvalue())
    assert details["source"] == "infotext"
    assert details["request"] == FluxRequest("a quiet harbour", steps=30, guidance=4, seed=77, size="512x512")


def test_damaged_record_falls_back_to_infotext():
    result = make_result(fmt="PNG")
    data = embed_metadata(result.images[0].data, "image/png", result, 0)
    data = data.replace(b'"request":', b'"requesX":')
    chunks = _png_chunks(data)  # fix the CRC so only the JSON is damaged
    fixed = b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(p)) + k + p + struct.pack(">I", __import__("zlib").crc32(k + p)) for k, p in chunks
    )
    details = read_info(fixed)
    assert details["source"] == "infotext" and details["request"] == result.reproduce_request


@pytest.mark.parametrize(
    "source, field_value",
    [
        (encode("PNG"), "<bytes>"),  # an image without parameters
        (b"not an image at all", "<bytes>"),
        (b"\x89PNG\r\n\x1a\n\0\0", "<bytes>"),  # truncated
    ],
)
def test_unreadable_sources_raise_clear_errors(source, field_value):
    with pytest.raises(FluxValidationError) as info:
        read_metadata(source)
    assert info.value.errors[0].field == "path"
    assert info.value.errors[0].value == field_value


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FluxValidationError, match="no such image file"):
        read_metadata(tmp_path / "nope.png")


def test_save_result_writes_images_json_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("FAL_KEY", "sk-very-secret-key")
    result = make_result(n=2, fmt="PNG", seed=5)
    first = save_result(result, tmp_path / "out")
    assert [p.name for p in first] == ["a-red-fox-in-snow-s5-0.png", "a-red-fox-in-snow-s5-1.png", "a-red-fox-in-snow-s5.request.json"]
    assert [im.path for im in result.images] == first[:2]
    second = result.save(tmp_path / "out")
    assert not set(first) & set(second) and all(p.exists() for p in first + second)
    assert second[0].name == "a-red-fox-in-snow-s5_2-0.png"
    for index, path in enumerate(first[:2]):
        details = read_info(path)
        assert details["request"] == result.reproduce_request and details["index"] == index
    doc = json.loads(first[2].read_text())
    assert doc["request"]["seed"] == 5 and doc["request_id"] == "req-1"
    assert [image["file"] for image in doc["images"]] == [p.name for p in first[:2]]
    for path in first + second:
        assert b"sk-very-secret-key" not in path.read_bytes()


def test_save_result_round_trip_jpeg(tmp_path):
    result = make_result(seed=11, steps=8)
    paths = save_result(result, tmp_path)
    assert paths[0].suffix == ".jpg"
    assert read_metadata(paths[0]) == result.reproduce_request
    with Image.open(paths[0]) as image:
        assert image.size == (64, 48)


_prompts = st.text(min_size=1, max_size=80).filter(lambda s: s.strip() != "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=_prompts, fmt=st.sampled_from(["PNG", "JPEG"]), seed=st.integers(0, 2**63 - 1),
       guidance=st.floats(0, 35, allow_nan=False), steps=st.integers(1, 50))
def test_any_prompt_round_trips(prompt, fmt, seed, guidance, steps):
    result = make_result(prompt, fmt=fmt, seed=seed, guidance_scale=guidance, num_inference_steps=steps)
    data = embed_metadata(result.images[0].data, result.images[0].content_type, result, 0)
    assert read_metadata(data) == result.reproduce_request


# -- size limits and damaged files ----------------------------------------------------------------


def _exif_size(data: bytes) -> int:
    return next(len(p) for m, p in _jpeg_segments(data)[0] if m == 0xE1 and p.startswith(b"Exif\0\0"))


def test_jpeg_long_non_ascii_prompt_keeps_the_record():
    prompt = "狐" * 16_000  # record and infotext together pass the 64 KB of one JPEG segment
    result = make_result(prompt)
    data = embed_metadata(result.images[0].data, "image/jpeg", result, 0)
    assert _exif_size(data) <= 65533
    info = read_info(data)
    assert info["source"] == "flux_nb" and info["request"] == result.reproduce_request
    # the infotext stays, its prompt cut, its parameter line whole
    first, params = info["infotext"].split("\n")
    assert first.endswith("...") and first.startswith("狐" * 1000) and "Seed: 42" in params
    with Image.open(io.BytesIO(data)) as image:
        image.load()


@pytest.mark.parametrize("prompt", ["狐" * 40_000, "a fox " * 20_000])
def test_jpeg_record_too_big_keeps_a_cut_infotext(prompt):
    result = make_result(prompt)
    data = embed_metadata(result.images[0].data, "image/jpeg", result, 0)
    assert _exif_size(data) <= 65533
    info = read_info(data)
    assert info["source"] == "infotext" and info["record"] is None
    assert info["request"].seed == 42 and info["request"].num_inference_steps == 28
    assert info["request"].prompt.endswith("...") and prompt.startswith(info["request"].prompt[:-3].rstrip())


def test_save_never_fails_for_metadata_size(tmp_path):
    result = make_result("狐" * 50_000, n=2)
    paths = save_result(result, tmp_path)
    assert len(paths) == 3 and read_metadata(paths[0]).seed == 42


def test_failed_write_leaves_no_half_written_files(tmp_path, monkeypatch):
    import builtins
    import errno

    from flux_nb import metadata

    calls = []

    class FullDisk(io.RawIOBase):
        def __init__(self, fh):
            self.fh = fh

        def write(self, payload):
            self.fh.write(payload[: len(payload) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        calls.append(path)
        return FullDisk(fh) if len(calls) == 2 else fh  # the second image fills the disk

    monkeypatch.setattr(metadata, "open", fake_open, raising=False)
    with pytest.raises(OSError) as info:
        save_result(make_result(n=2), tmp_path / "out")
    assert info.value.errno == errno.ENOSPC
    assert len(calls) == 2 and list((tmp_path / "out").iterdir()) == []


def _png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    chunks = _png_chunks(encode("PNG"))
    chunks.insert(1, (kind, payload))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(p)) + k + p + struct.pack(">I", zlib.crc32(k + p)) for k, p in chunks
    )


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_compressed_text_bombs_are_not_inflated(kind):
    import zlib

    text = "a fox\nSteps: 30, CFG scale: 4, Seed: 77" + " " * 5_000_000
    header = b"parameters\x00" + (b"\x00" if kind == b"zTXt" else b"\x01\x00\x00\x00")
    bomb = _png_with_chunk(kind, header + zlib.compress(text.encode(), 9))
    assert len(bomb) < 100_000
    with pytest.raises(FluxValidationError, match="no flux-nb or A1111 parameters"):
        read_info(bomb)
    # a compressed chunk of ordinary size still reads
    small = _png_with_chunk(kind, header + zlib.compress(b"a fox\nSteps: 30, CFG scale: 4, Seed: 77"))
    assert read_metadata(small).seed == 77


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00II",  # a TIFF header cut short
        b"Exif\x00\x00XXXXXXXX",  # not a TIFF header
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05",  # an IFD cut in its entry count
    ],
)
def test_broken_exif_is_a_validation_error(exif):
    original = encode("JPEG")
    data = original[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + original[2:]
    with pytest.raises(FluxValidationError) as info:
        read_info(data)
    assert info.value.errors[0].field == "path" and info.value.errors[0].value == "<bytes>"


def test_file_names_follow_the_images_own_extension(tmp_path):
    request = FluxRequest("a fox")
    images = [FluxImage(encode("WEBP"), "image/webp", 64, 48), FluxImage(encode("JPEG"), "image/jpeg", 64, 48),
              FluxImage(encode("PNG"), "image/png", 64, 48)]
    paths = save_result(FluxResult(images, seed=3, request=request), tmp_path)
    assert [p.suffix for p in paths] == [".webp", ".jpg", ".png", ".json"]
