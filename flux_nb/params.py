"""The validated request for ``fal-ai/flux-lora``: fal's fields, defaults and limits.

:class:`FluxRequest` is what every front end builds and what the client sends. Building one checks
every field at once and raises a single :class:`~flux_nb.errors.FluxValidationError` that names each
bad field, the value given and what is allowed. ``to_dict()`` gives exactly fal's JSON.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import FieldError, FluxValidationError

__all__ = [
    "APP_ID",
    "IMAGE_SIZE_PRESETS",
    "FIELD_ALIASES",
    "LIMITS",
    "ImageSize",
    "LoraWeight",
    "FluxRequest",
    "parse_image_size",
    "canonical_field",
]

APP_ID = "fal-ai/flux-lora"

#: fal's named sizes, (width, height).
IMAGE_SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}

#: Inclusive numeric limits. Side limit is fal's toolkit limit; flux-lora's own is unconfirmed.
#: LoRA scale: fal documents no range; -4..4 admits the usual 0..4 and "slider" LoRAs' negatives.
LIMITS: dict[str, tuple[float, float]] = {
    "num_inference_steps": (1, 50),
    "guidance_scale": (0.0, 35.0),
    "num_images": (1, 4),
    "seed": (0, 2**63 - 1),
    "side": (1, 14142),
    "lora_scale": (-4.0, 4.0),
}

OUTPUT_FORMATS = ("jpeg", "png")
ACCELERATIONS = ("none", "regular")

#: Short names accepted wherever a field is named in Python (``generate(p, steps=20)``, sweep axes).
FIELD_ALIASES: dict[str, str] = {
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "cfg": "guidance_scale",
    "size": "image_size",
    "n": "num_images",
    "format": "output_format",
    "safety": "enable_safety_checker",
    "lora": "loras",
}

_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


@dataclass(frozen=True)
class ImageSize:
    """A custom image size in pixels."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    def to_dict(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height}


@dataclass(frozen=True)
class LoraWeight:
    """One LoRA: ``path`` is a URL, a local file (uploaded for you) or a Hugging Face repo id."""

    path: str
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale}


def canonical_field(name: str) -> str:
    """The request field a name or alias stands for (``"steps"`` -> ``"num_inference_steps"``)."""
    return FIELD_ALIASES.get(name, name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse_image_size(value: Any, errors: list[FieldError], name: str = "image_size") -> str | ImageSize | None:
    """Normalise a size: a preset name, ``"1280x720"``, ``(w, h)``, ``{"width", "height"}`` or ImageSize.

    Appends to ``errors`` and returns None when the value is unusable.
    """
    lo, hi = LIMITS["side"]
    allowed = f"a preset ({', '.join(IMAGE_SIZE_PRESETS)}), 'WIDTHxHEIGHT' or {{'width', 'height'}}"
    if isinstance(value, str):
        if value in IMAGE_SIZE_PRESETS:
            return value
        match = _SIZE_TEXT.match(value)
        if not match:
            hint = difflib.get_close_matches(value, IMAGE_SIZE_PRESETS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            errors.append(FieldError(name, value, f"must be {allowed}{extra}", "enum"))
            return None
        width, height = int(match.group(1)), int(match.group(2))
    elif isinstance(value, ImageSize):
        width, height = value.width, value.height
    elif isinstance(value, Mapping):
        unknown = set(value) - {"width", "height"}
        if unknown or "width" not in value or "height" not in value:
            errors.append(FieldError(name, value, "a custom size needs exactly the keys 'width' and 'height'", "missing"))
            return None
        width, height = value["width"], value["height"]
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        width, height = value
    else:
        errors.append(FieldError(name, value, f"must be {allowed}", "type_error"))
        return None
    ok = True
    for side_name, side in (("width", width), ("height", height)):
        if not _is_int(side) or not lo <= side <= hi:
            errors.append(
                FieldError(f"{name}.{side_name}", side, f"must be a whole number from {lo} to {hi}", "range")
            )
            ok = False
    return ImageSize(width, height) if ok else None


def _parse_lora(index: int, value: Any, errors: list[FieldError]) -> LoraWeight | None:
    where = f"loras.{index}"
    if isinstance(value, LoraWeight):
        path, scale = value.path, value.scale
    elif isinstance(value, str):
        path, scale = value, 1.0
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"path", "scale"})
        if unknown:
            errors.append(FieldError(f"{where}.{unknown[0]}", value[unknown[0]], "unknown LoRA key; allowed: path, scale", "extra"))
            return None
        if "path" not in value:
            errors.append(FieldError(f"{where}.path", None, "is required", "missing"))
            return None
        path, scale = value["path"], value.get("scale", 1.0)
    else:
        errors.append(FieldError(where, value, "must be {'path': ..., 'scale': ...}, a LoraWeight or a path", "type_error"))
        return None
    ok = True
    if not isinstance(path, str) or not path.strip():
        errors.append(FieldError(f"{where}.path", path, "must be a non-empty URL, file path or repo id", "type_error"))
        ok = False
    lo, hi = LIMITS["lora_scale"]
    if not _is_number(scale) or not lo <= scale <= hi:
        errors.append(FieldError(f"{where}.scale", scale, f"must be a number from {_fmt(lo)} to {_fmt(hi)}", "range"))
        ok = False
    return LoraWeight(path.strip(), float(scale)) if ok else None


_FIELDS = (
    "prompt",
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "num_images",
    "seed",
    "loras",
    "enable_safety_checker",
    "output_format",
    "sync_mode",
    "acceleration",
)


@dataclass(frozen=True, init=False)
class FluxRequest:
    """A validated ``fal-ai/flux-lora`` input, with fal's defaults.

    Build it with keywords (aliases such as ``steps``, ``guidance`` and ``size`` work too)::

        FluxRequest("a red fox in snow", image_size="square_hd", steps=20, seed=7)

    Every bad field is reported together in one :class:`FluxValidationError`. Requests are
    immutable; ``replace(**changes)`` returns a new, validated one.
    """

    prompt: str
    image_size: str | ImageSize = "landscape_4_3"
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    num_images: int = 1
    seed: int | None = None
    loras: tuple[LoraWeight, ...] = field(default_factory=tuple)
    enable_safety_checker: bool = True
    output_format: str = "jpeg"
    sync_mode: bool = False
    acceleration: str = "none"

    def __init__(self, prompt: Any = None, /, **fields: Any):
        # ``prompt`` is positional-only so that ``prompt=`` given as a keyword lands in ``fields``
        # and a prompt given both ways is reported like any other duplicate, not a TypeError.
        if "prompt" in fields and prompt is not None:
            raise FluxValidationError([FieldError("prompt", fields["prompt"], "given twice (positionally and as prompt=)", "duplicate")])
        values = _validate({"prompt": fields.pop("prompt", prompt), **fields})
        for name in _FIELDS:
            object.__setattr__(self, name, values[name])

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any) -> "FluxRequest":
        """Build from fal's JSON input (as a client would send it). Unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise FluxValidationError([FieldError("body", data, "must be a JSON object", "type_error")])
        # fal's JSON uses full names only (aliases are a Python convenience); every bad key is
        # reported together with every bad value.
        bad = [_unknown_field(k, v) for k, v in data.items() if not isinstance(k, str) or k in FIELD_ALIASES]
        good = {k: v for k, v in data.items() if isinstance(k, str) and k not in FIELD_ALIASES}
        try:
            request = cls(**good)
        except FluxValidationError as exc:
            raise FluxValidationError(bad + exc.errors) from None
        if bad:
            raise FluxValidationError(bad)
        return request

    def replace(self, **changes: Any) -> "FluxRequest":
        """A copy with some fields changed (aliases allowed), validated again."""
        values = {name: getattr(self, name) for name in _FIELDS}
        for key, value in changes.items():
            values[canonical_field(key)] = value
        return FluxRequest(**values)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Exactly fal's JSON input. ``seed`` is left out when unset (fal then picks one)."""
        out: dict[str, Any] = {
            "prompt": self.prompt,
            "image_size": self.image_size if isinstance(self.image_size, str) else self.image_size.to_dict(),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "num_images": self.num_images,
            "loras": [lora.to_dict() for lora in self.loras],
            "enable_safety_checker": self.enable_safety_checker,
            "output_format": self.output_format,
            "sync_mode": self.sync_mode,
            "acceleration": self.acceleration,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    # -- derived values -----------------------------------------------------------------------

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, presets resolved."""
        if isinstance(self.image_size, str):
            return IMAGE_SIZE_PRESETS[self.image_size]
        return (self.image_size.width, self.image_size.height)

    @property
    def size_label(self) -> str:
        """The size as users write it: the preset name, or ``WIDTHxHEIGHT``."""
        return self.image_size if isinstance(self.image_size, str) else str(self.image_size)

    def cache_key(self) -> str:
        """A stable hash of everything that shapes the images (sizes resolved, sync_mode ignored)."""
        data = self.to_dict()
        data["image_size"] = {"width": self.width, "height": self.height}
        data.pop("sync_mode")
        for lora in data["loras"]:
            # A local LoRA file retrained in place must not hit images made with the old one.
            lora["file"] = _local_file_identity(lora["path"])
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _local_file_identity(path: str) -> list[int] | None:
    """(size, mtime) of a LoRA path naming a file on this machine, else None."""
    if "://" in path:
        return None
    try:
        info = os.stat(os.path.expanduser(path))
    except (OSError, ValueError):
        return None
    return [info.st_size, info.st_mtime_ns]


def _unknown_field(key: Any, value: Any) -> FieldError:
    if isinstance(key, str) and key in FIELD_ALIASES:
        return FieldError(key, value, f"unknown field; did you mean {FIELD_ALIASES[key]!r}?", "extra")
    close = difflib.get_close_matches(str(key), list(_FIELDS) + list(FIELD_ALIASES), n=1, cutoff=0.6)
    hint = f"did you mean {canonical_field(close[0])!r}?" if close else "allowed: " + ", ".join(_FIELDS)
    return FieldError(str(key), value, f"unknown field; {hint}", "extra")


def _validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[FieldError] = []
    given: dict[str, Any] = {}
    for key, value in raw.items():
        name = canonical_field(key) if isinstance(key, str) else key
        if name not in _FIELDS:
            errors.append(_unknown_field(key, value))
        elif name in given:
            errors.append(FieldError(key, value, f"given twice (also as {name!r})", "duplicate"))
        else:
            given[name] = value

    out: dict[str, Any] = {}

    prompt = given.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        errors.append(FieldError("prompt", prompt, "must be a non-empty string", "missing" if prompt is None else "type_error"))
    elif not _is_utf8(prompt):
        # JSON allows lone surrogates ("\ud800"), but no answer or file could carry them
        errors.append(FieldError("prompt", prompt, "must be valid Unicode text (it has a lone surrogate)", "value_error"))
    out["prompt"] = prompt

    out["image_size"] = parse_image_size(given.get("image_size", "landscape_4_3"), errors)

    for name, default in (("num_inference_steps", 28), ("num_images", 1)):
        value = given.get(name, default)
        lo, hi = LIMITS[name]
        if not _is_int(value) or not lo <= value <= hi:
            errors.append(FieldError(name, value, f"must be a whole number from {_fmt(lo)} to {_fmt(hi)}", "range"))
        out[name] = value

    guidance = given.get("guidance_scale", 3.5)
    lo, hi = LIMITS["guidance_scale"]
    if not _is_number(guidance) or not lo <= guidance <= hi:
        errors.append(FieldError("guidance_scale", guidance, f"must be a number from {_fmt(lo)} to {_fmt(hi)}", "range"))
    else:
        guidance = float(guidance)
    out["guidance_scale"] = guidance

    seed = given.get("seed")
    lo, hi = LIMITS["seed"]
    if seed is not None and (not _is_int(seed) or not lo <= seed <= hi):
        errors.append(FieldError("seed", seed, f"must be a whole number from 0 to {int(hi)}, or None for random", "range"))
    out["seed"] = seed

    loras_raw = given.get("loras", ())
    loras: list[LoraWeight] = []
    if isinstance(loras_raw, (str, Mapping, LoraWeight)):
        loras_raw = [loras_raw]
    if not isinstance(loras_raw, Iterable) or isinstance(loras_raw, (bytes, bytearray)):
        errors.append(FieldError("loras", loras_raw, "must be a list of {'path', 'scale'}", "type_error"))
    else:
        for i, item in enumerate(loras_raw):
            lora = _parse_lora(i, item, errors)
            if lora is not None:
                loras.append(lora)
    out["loras"] = tuple(loras)

    for name, default in (("enable_safety_checker", True), ("sync_mode", False)):
        value = given.get(name, default)
        if not isinstance(value, bool):
            errors.append(FieldError(name, value, "must be true or false", "type_error"))
        out[name] = value

    for name, default, allowed in (("output_format", "jpeg", OUTPUT_FORMATS), ("acceleration", "none", ACCELERATIONS)):
        value = given.get(name, default)
        if isinstance(value, str) and name == "output_format" and value.lower() == "jpg":
            value = "jpeg"
        if value not in allowed:
            errors.append(FieldError(name, value, "must be one of " + ", ".join(allowed), "enum"))
        out[name] = value

    if errors:
        raise FluxValidationError(errors)
    return out
