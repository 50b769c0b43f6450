"""Parameters embedded in saved images, and reading them back.

Every image flux-nb saves carries what made it, in two forms:

- an A1111-style *infotext* (prompt line, then ``Steps: 28, CFG scale: 3.5, Seed: 42, ...``) that
  other image tools already read, and
- a ``flux_nb`` JSON record with the full request (seed included), the image's place in its batch
  and the flux-nb version, which reproduces the image exactly.

PNG: both go in text chunks right after ``IHDR`` (``parameters`` and ``flux_nb``). JPEG: an Exif
APP1 segment whose UserComment holds the infotext (where A1111 puts it) and whose MakerNote, Exif's
place for a producer's private data, holds ``flux_nb\\0`` + the JSON. The image data itself is never
re-encoded: chunks and segments are spliced into the file as it came from the server.

No secret is ever written: the request has no key field, and nothing else goes in.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import FieldError, FluxValidationError
from .params import IMAGE_SIZE_PRESETS, FluxRequest, ImageSize, LoraWeight

if TYPE_CHECKING:  # pragma: no cover
    from .result import FluxResult

__all__ = [
    "MODEL_NAME",
    "format_number",
    "infotext",
    "parse_infotext",
    "embed_metadata",
    "read_info",
    "read_metadata",
    "save_result",
]

#: The model name written into infotext (``Model: flux-lora``).
MODEL_NAME = "flux-lora"

#: Keyword of the JSON record (PNG text chunk keyword, JPEG MakerNote prefix).
RECORD_KEY = "flux_nb"
#: Keyword of the A1111 infotext PNG chunk.
INFOTEXT_KEY = "parameters"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")
_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_MAKER_NOTE = 0x927C
_SOFTWARE = 0x0131
_MAKER_PREFIX = RECORD_KEY.encode() + b"\x00"


def _version() -> str:
    from . import __version__

    return __version__


# -- infotext -------------------------------------------------------------------------------------


def format_number(x: float) -> str:
    """The shortest text that reads back as the same number (``3`` for 3.0, ``0.1`` for 0.1).

    Shared by infotext, the reproducing ``%%flux`` cell, copy-as-code and the notebook captions.
    """
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _quote(value: str) -> str:
    # As A1111 does: a value holding a comma or a quote is written as a JSON string.
    if "," not in value and '"' not in value and "\n" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def infotext(request: FluxRequest, seed: int | None, *, index: int | None = None) -> str:
    """The A1111 "infotext" for ``request`` made with ``seed``.

    The prompt line, then one line of ``Key: value`` pairs::

        a red fox in snow
        Steps: 28, CFG scale: 3.5, Seed: 42, Size: 1024x768, Model: flux-lora, Format: jpeg

    LoRAs are listed as ``LoRAs: "path:scale, path:scale"``; ``index`` (the image's place in a
    batch of ``num_images``) adds ``Batch size`` / ``Batch pos`` as A1111 writes them.
    """
    width, height = request.size
    pairs: list[tuple[str, str]] = [
        ("Steps", str(request.num_inference_steps)),
        ("CFG scale", format_number(request.guidance_scale)),
        ("Seed", str(seed if seed is not None else request.seed)),
        ("Size", f"{width}x{height}"),
    ]
    if isinstance(request.image_size, str):
        pairs.append(("Size preset", request.image_size))
    pairs.append(("Model", MODEL_NAME))
    if request.loras:
        pairs.append(("LoRAs", ", ".join(f"{lora.path}:{format_number(lora.scale)}" for lora in request.loras)))
    if request.num_images > 1 or index:
        pairs.append(("Batch size", str(request.num_images)))
        pairs.append(("Batch pos", str(index or 0)))
    pairs.append(("Format", request.output_format))
    if not request.enable_safety_checker:
        pairs.append(("Safety checker", "off"))
    if request.acceleration != "none":
        pairs.append(("Acceleration", request.acceleration))
    pairs.append(("Version", f"flux-nb {_version()}"))
    params = ", ".join(f"{key}: {_quote(value)}" for key, value in pairs)
    return f"{request.prompt.strip()}\n{params}"


# Same shape as A1111's own parser: a key, then a quoted JSON string or anything up to a comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _params(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in _PARAM.findall(line):
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key.strip()] = value.strip()
    return out


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an A1111 infotext into ``{"prompt", "negative_prompt", "params": {key: value}}``.

    Works on infotext from flux-nb and from other tools (their extra keys stay in ``params``).
    """
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    # A1111's rule: the last line is the parameter line when it holds at least three pairs.
    if len(lines) > 1 and len(_PARAM.findall(lines[-1])) >= 3:
        params = _params(lines.pop())
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if negative_lines or line.startswith("Negative prompt:"):
            negative_lines.append(line.removeprefix("Negative prompt:").strip())
        else:
            prompt_lines.append(line)
    return {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip(), "params": params}


def _int_param(params: Mapping[str, str], key: str, errors: list[FieldError], field: str) -> int | None:
    if key not in params:
        return None
    try:
        return int(params[key])
    except ValueError:
        errors.append(FieldError(field, params[key], f"infotext {key!r} is not a whole number", "type_error"))
        return None


def request_from_infotext(text: str) -> tuple[FluxRequest, int | None]:
    """The request an infotext describes and the image's batch position (None when not given)."""
    parsed = parse_infotext(text)
    params = parsed["params"]
    errors: list[FieldError] = []
    fields: dict[str, Any] = {}
    steps = _int_param(params, "Steps", errors, "num_inference_steps")
    if steps is not None:
        fields["num_inference_steps"] = steps
    if "CFG scale" in params or "Distilled CFG Scale" in params:
        raw = params.get("Distilled CFG Scale", params.get("CFG scale"))
        try:
            fields["guidance_scale"] = float(raw)
        except (TypeError, ValueError):
            errors.append(FieldError("guidance_scale", raw, "infotext 'CFG scale' is not a number", "type_error"))
    seed = _int_param(params, "Seed", errors, "seed")
    if seed is not None:
        fields["seed"] = seed
    preset = params.get("Size preset")
    if preset in IMAGE_SIZE_PRESETS:
        fields["image_size"] = preset
    elif "Size" in params:
        fields["image_size"] = params["Size"]
    if params.get("LoRAs"):
        loras = []
        for item in params["LoRAs"].split(", "):
            path, _, scale = item.rpartition(":")
            try:
                loras.append(LoraWeight(path, float(scale)) if path else LoraWeight(item))
            except ValueError:
                loras.append(LoraWeight(item))
        fields["loras"] = loras
    batch = _int_param(params, "Batch size", errors, "num_images")
    if batch is not None:
        fields["num_images"] = batch
    if params.get("Format") in ("jpeg", "png"):
        fields["output_format"] = params["Format"]
    if params.get("Safety checker") == "off":
        fields["enable_safety_checker"] = False
    if params.get("Acceleration"):
        fields["acceleration"] = params["Acceleration"]
    if errors:
        raise FluxValidationError(errors)
    index = _int_param(params, "Batch pos", [], "index")
    return FluxRequest(parsed["prompt"], **fields), index


def _record(result: "FluxResult", index: int) -> dict[str, Any]:
    """The ``flux_nb`` JSON record for image ``index`` of ``result``."""
    image = result.images[index]
    record: dict[str, Any] = {
        "version": _version(),
        "request": result.reproduce_request.to_dict(),
        "seed": result.seed,
        "index": index,
        "width": image.width,
        "height": image.height,
    }
    if result.request_id:
        record["request_id"] = result.request_id
    if result.backend:
        record["backend"] = result.backend
    return record


# -- PNG ------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, payload) chunks. Raises ValueError on a malformed file."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated PNG chunk header")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("PNG does not start with IHDR")
    return chunks


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (what every reader knows), else uncompressed UTF-8 iTXt."""
    try:
        return _png_chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # keyword, null, compression flag 0, method 0, empty language tag, empty translated keyword
        payload = keyword.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
        return _png_chunk(b"iTXt", payload)


def _text_keyword(payload: bytes) -> bytes:
    return payload.split(b"\x00", 1)[0]


#: The most a compressed PNG text chunk may inflate to; bigger ones (zip bombs) are skipped.
MAX_TEXT_BYTES = 1 << 20


def _inflate(data: bytes) -> bytes | None:
    """``data`` decompressed, or None when it would pass :data:`MAX_TEXT_BYTES`."""
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail or not inflater.eof and inflater.decompress(b"", 1):
        return None  # more output was waiting: over the cap
    return text


def _png_text(kind: bytes, payload: bytes) -> tuple[str, str] | None:
    """Decode a tEXt / iTXt / zTXt payload into (keyword, text); None if damaged or too big."""
    keyword, _, rest = payload.partition(b"\x00")
    try:
        if kind == b"tEXt":
            return keyword.decode("latin-1"), rest.decode("latin-1")
        if kind == b"zTXt":
            inflated = _inflate(rest[1:])
            return None if inflated is None else (keyword.decode("latin-1"), inflated.decode("latin-1"))
        if kind == b"iTXt":
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            if compressed:
                inflated = _inflate(text)
                if inflated is None:
                    return None
                text = inflated
            return keyword.decode("latin-1"), text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError):
        return None
    return None


def _embed_png(data: bytes, texts: Mapping[str, str]) -> bytes:
    chunks = _png_chunks(data)
    ours = {key.encode("latin-1") for key in texts}
    out = [_PNG_SIGNATURE, _png_chunk(*chunks[0])]
    out.extend(_text_chunk(key, text) for key, text in texts.items())
    for kind, payload in chunks[1:]:
        if kind in _TEXT_CHUNKS and _text_keyword(payload) in ours:
            continue  # replaced by ours
        out.append(_png_chunk(kind, payload))
    return b"".join(out)


def _read_png_texts(data: bytes) -> dict[str, str]:
    texts: dict[str, str] = {}
    for kind, payload in _png_chunks(data):
        if kind in _TEXT_CHUNKS:
            decoded = _png_text(kind, payload)
            if decoded:
                texts.setdefault(decoded[0], decoded[1])
    return texts


# -- JPEG -----------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments before the scan data, as (marker, payload), and the rest of the file."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG file")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("malformed JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: the rest stays as is
            return segments, data[pos:]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError("truncated JPEG segment")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG has no image data")


#: The largest payload of one JPEG marker segment (its 16-bit length counts itself).
MAX_SEGMENT_PAYLOAD = 0xFFFF - 2


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > MAX_SEGMENT_PAYLOAD:
        raise ValueError("metadata too large for one JPEG segment (64 KB)")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _encode_comment(comment: str, big_endian: bool) -> bytes:
    # UNICODE user comments are UCS-2 in the byte order of the TIFF header that holds them.
    if comment.isascii():
        return b"ASCII\x00\x00\x00" + comment.encode("ascii")
    return b"UNICODE\x00" + comment.encode("utf-16-be" if big_endian else "utf-16-le")


def _exif_payload(comment: str | None, record_json: str | None) -> bytes:
    """The Exif APP1 payload; a ``None`` comment or record is left out."""
    from PIL import Image

    exif = Image.Exif()
    exif[_SOFTWARE] = f"flux-nb {_version()}"
    raw = exif.tobytes()
    if not raw.startswith(_EXIF_HEADER):
        raw = _EXIF_HEADER + raw
    big_endian = raw[len(_EXIF_HEADER) : len(_EXIF_HEADER) + 2] == b"MM"
    ifd = exif.get_ifd(_EXIF_IFD)
    if comment is not None:
        ifd[_USER_COMMENT] = _encode_comment(comment, big_endian)
    if record_json is not None:
        ifd[_MAKER_NOTE] = _MAKER_PREFIX + record_json.encode("utf-8")
    raw = exif.tobytes()
    return raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw


def _comment_size(comment: str) -> int:
    return len(_encode_comment(comment, False))


def shorten_infotext(text: str, max_bytes: int) -> str | None:
    """``text`` with its prompt cut (ending ``...``) so the Exif UserComment takes at most
    ``max_bytes``; the parameter line stays whole. None when not even that fits. Pure."""
    if _comment_size(text) <= max_bytes:
        return text
    prompt, sep, params = text.rpartition("\n")
    if not sep:
        prompt, params = text, ""

    def cut(k: int) -> str:
        return prompt[:k].rstrip() + "..." + (f"\n{params}" if params else "")

    if _comment_size(cut(0)) > max_bytes:
        return None
    lo, hi = 0, len(prompt)  # the size grows with k: find the longest cut that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _comment_size(cut(mid)) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)


# TIFF pads each value to an even length; a few bytes of slack cover that.
_SLACK = 8


def _fitted_exif(comment: str, record_json: str) -> bytes:
    """The Exif payload within one JPEG segment: see :func:`embed_metadata` for what is kept."""
    payload = _exif_payload(comment, record_json)
    if len(payload) <= MAX_SEGMENT_PAYLOAD:
        return payload
    for record in (record_json, None):  # first keep the record and cut the infotext; then drop it
        room = MAX_SEGMENT_PAYLOAD - len(_exif_payload(None, record)) - _SLACK
        short = shorten_infotext(comment, room - 12) if room > 12 else None  # 12: the tag's entry
        if short is None:
            continue
        payload = _exif_payload(short, record)
        if len(payload) <= MAX_SEGMENT_PAYLOAD:
            return payload
    return _exif_payload(None, None)


def _embed_jpeg(data: bytes, comment: str, record_json: str) -> bytes:
    segments, rest = _jpeg_segments(data)
    kept = [(m, p) for m, p in segments if not (m == 0xE1 and p.startswith(_EXIF_HEADER))]
    # Exif goes right after SOI, or after a JFIF APP0 when there is one (as libjpeg and Pillow write).
    insert_at = 1 if kept and kept[0][0] == 0xE0 and kept[0][1].startswith(b"JFIF\x00") else 0
    kept.insert(insert_at, (0xE1, _fitted_exif(comment, record_json)))
    return b"\xff\xd8" + b"".join(_jpeg_segment(m, p) for m, p in kept) + rest


def _decode_user_comment(value: Any, big_endian: bool) -> str | None:
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, bytearray)):
        return None
    prefix, body = bytes(value[:8]), bytes(value[8:])
    if prefix == b"UNICODE\x00":
        # Some writers ignore the TIFF byte order: trust a BOM, else the header.
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16")
        return body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return body.decode("utf-8", errors="replace").rstrip("\x00")
    return bytes(value).decode("utf-8", errors="replace").rstrip("\x00")


def _read_jpeg_texts(data: bytes) -> dict[str, str]:
    import warnings

    from PIL import Image

    texts: dict[str, str] = {}
    segments, _ = _jpeg_segments(data)
    for marker, payload in segments:
        if marker == 0xE1 and payload.startswith(_EXIF_HEADER):
            exif = Image.Exif()
            with warnings.catch_warnings():  # Pillow warns about each damaged tag it skips
                warnings.simplefilter("ignore")
                exif.load(payload)
            big_endian = payload[len(_EXIF_HEADER) : len(_EXIF_HEADER) + 2] == b"MM"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ifd = exif.get_ifd(_EXIF_IFD)
            comment = _decode_user_comment(ifd.get(_USER_COMMENT), big_endian)
            if comment:
                texts[INFOTEXT_KEY] = comment
            note = ifd.get(_MAKER_NOTE)
            if isinstance(note, (bytes, bytearray)) and bytes(note).startswith(_MAKER_PREFIX):
                texts[RECORD_KEY] = bytes(note[len(_MAKER_PREFIX) :]).decode("utf-8", errors="replace")
            break
    return texts


# -- public API -----------------------------------------------------------------------------------


def embed_metadata(data: bytes, content_type: str, result: "FluxResult", index: int) -> bytes:
    """``data`` (image ``index`` of ``result``) with its parameters embedded; pixels untouched.

    PNG gets ``parameters`` (infotext) and ``flux_nb`` (JSON) text chunks after IHDR, replacing
    earlier ones with those keywords; JPEG gets one Exif APP1 segment (replacing any Exif there)
    with the infotext as UserComment and the JSON (UTF-8) as MakerNote. Other formats are returned
    as is.

    Size never fails a save. A JPEG segment holds at most 65533 bytes, so when the infotext and
    the record do not both fit, the JSON record is kept whole (it reproduces the image exactly) and
    the infotext's prompt is cut, ending in ``...``, its parameter line kept whole; when the record
    alone does not fit (prompts of tens of thousands of characters), it is left out and the cut
    infotext is kept, so :func:`read_info` then gives the infotext's request, with the cut
    prompt. PNG text chunks have no such limit.
    """
    comment = infotext(result.reproduce_request, result.seed, index=index)
    record = _record(result, index)
    if content_type == "image/png" or data.startswith(_PNG_SIGNATURE):
        # ASCII JSON stays in a tEXt chunk, which every PNG reader knows.
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
        return _embed_png(data, {INFOTEXT_KEY: comment, RECORD_KEY: text})
    if content_type in ("image/jpeg", "image/jpg") or data.startswith(b"\xff\xd8"):
        # UTF-8: a third of the size of \uXXXX escapes, which matters within 64 KB.
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        return _embed_jpeg(data, comment, text)
    return data


def _load_bytes(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FluxValidationError([FieldError("path", str(source), "no such image file", "not_found")])
    return path.read_bytes()


def read_info(source: str | Path | bytes) -> dict[str, Any]:
    """Everything flux-nb can read from an image file (a path or its bytes).

    Returns a dict with ``request`` (a :class:`FluxRequest` that reproduces the image, seed set),
    ``index`` (its place in the batch, or None), ``source`` (``"flux_nb"`` when read from flux-nb's
    JSON record, ``"infotext"`` when parsed from A1111 parameters), ``infotext``, ``record``
    (the JSON record, or None), ``version``, ``format``.

    Raises :class:`FluxValidationError` (field ``path``) when the file has no parameters.
    """
    data = _load_bytes(source)
    label = str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "<bytes>"
    try:
        if data.startswith(_PNG_SIGNATURE):
            fmt, texts = "png", _read_png_texts(data)
        elif data.startswith(b"\xff\xd8"):
            fmt, texts = "jpeg", _read_jpeg_texts(data)
        else:
            raise ValueError("not a PNG or JPEG file")
    # Pillow's Exif parser raises SyntaxError for a bad TIFF header and struct.error for cut values.
    except (ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise FluxValidationError([FieldError("path", label, f"cannot read image metadata: {exc}", "type_error")]) from None

    info: dict[str, Any] = {
        "format": fmt,
        "infotext": texts.get(INFOTEXT_KEY),
        "record": None,
        "version": None,
        "index": None,
    }
    raw_record = texts.get(RECORD_KEY)
    if raw_record:
        try:
            record = json.loads(raw_record)
            request = FluxRequest.from_dict(record["request"])
        except (ValueError, KeyError, TypeError):
            record = None  # damaged record: fall back to the infotext
        else:
            info.update(record=record, request=request, source=RECORD_KEY,
                        version=record.get("version"), index=record.get("index"))
            return info
    if info["infotext"]:
        request, index = request_from_infotext(info["infotext"])
        info.update(request=request, source="infotext", index=index)
        return info
    raise FluxValidationError([FieldError("path", label, "has no flux-nb or A1111 parameters embedded", "missing")])


def read_metadata(source: str | Path | bytes) -> FluxRequest:
    """The request that reproduces a saved image (read from its embedded parameters)."""
    return read_info(source)["request"]


# -- saving ---------------------------------------------------------------------------------------

_SLUG = re.compile(r"[^a-z0-9]+")


def file_stem(result: "FluxResult", max_words: int = 6) -> str:
    """A readable base name: the prompt's first words and the seed, e.g. ``red-fox-in-snow-s42``."""
    words = _SLUG.sub(" ", result.prompt.lower()).split()[:max_words]
    slug = "-".join(words)[:48].strip("-") or "flux"
    return f"{slug}-s{result.seed}"


def _file_extension(image: Any) -> str:
    """The file name extension of a saved image: :attr:`FluxImage.extension`, JPEG spelled ``jpg``."""
    return "jpg" if image.extension == "jpeg" else image.extension


def _names(stem: str, result: "FluxResult") -> list[str]:
    names = [f"{stem}-{i}.{_file_extension(im)}" for i, im in enumerate(result.images)]
    return names + [f"{stem}.request.json"]


def _request_json(result: "FluxResult", image_names: list[str]) -> str:
    doc = {
        "version": _version(),
        "request": result.reproduce_request.to_dict(),
        "seed": result.seed,
        "request_id": result.request_id,
        "backend": result.backend,
        "created_at": result.created_at.isoformat(),
        "timings": result.timings,
        "images": [
            {"file": name, "width": im.width, "height": im.height, "content_type": im.content_type, "nsfw": im.nsfw}
            for name, im in zip(image_names, result.images)
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def save_result(result: "FluxResult", folder: str | Path) -> list[Path]:
    """Write ``result``'s full-size images with embedded parameters, plus ``<stem>.request.json``.

    Files are named after the prompt and seed (``red-fox-s42-0.jpg``); existing files are never
    overwritten: a clashing name gets a counter (``red-fox-s42_2-0.jpg``). Each image's ``path`` is
    set to where it was written. Returns the paths, images first, the JSON last.
    """
    # Absolute, so image.path (used for the full-size link) stays right if the working folder changes.
    folder = Path(folder).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    base = file_stem(result)
    payloads = [embed_metadata(im.data, im.content_type, result, i) for i, im in enumerate(result.images)]
    for attempt in range(1, 10_000):
        stem = base if attempt == 1 else f"{base}_{attempt}"
        names = _names(stem, result)
        if any((folder / name).exists() for name in names):
            continue
        written: list[Path] = []
        try:
            # "x" mode: a file that appeared since the check is never overwritten; try the next stem.
            for name, payload in zip(names, payloads):
                with open(folder / name, "xb") as fh:
                    written.append(folder / name)  # created: ours to remove if anything fails
                    fh.write(payload)
            json_path = folder / names[-1]
            with open(json_path, "x", encoding="utf-8") as fh:
                written.append(json_path)
                fh.write(_request_json(result, names[:-1]))
        except OSError as exc:
            # A full disk, a lost mount, a name taken meanwhile: never leave half a save behind.
            for path in written:
                path.unlink(missing_ok=True)
            if isinstance(exc, FileExistsError):
                continue
            raise
        for image, path in zip(result.images, written):
            image.path = path
        return written
    raise FileExistsError(f"no free file name for {base!r} in {folder}")
