"""Planning a sweep: which keywords are axes, the cells of their product, and the seed policy.

Pure logic apart from the remembered seed (:meth:`flux_nb.store.Store.sweep_seed`): nothing here
sends a request. :func:`build_plan` turns ``sweep()``'s arguments into a :class:`SweepPlan`.

Rules (see ``docs/sweeps.md``):

- a keyword is an **axis** when its value is a list, tuple or range, or, for a numeric field
  (steps, guidance, seed, num_images, LoRA scales), a grammar string such as ``"1-9 (+2)"``;
  anything else is a fixed field. ``image_size=(1024, 768)`` is one custom size, not an axis.
- axis order is keyword order (first = x, second = y, third = z); a prompt axis (a list of prompts,
  or the variants of ``a {red|blue} car``) comes first, as the prompt is the first argument.
- LoRAs: ``loras=[...]`` is always fixed; ``lora=[None, "a.safetensors", ...]`` sweeps one extra
  LoRA (None = without it), added after the fixed ones; ``lora_scale`` sets the scale of every LoRA
  in the cell, ``lora_scale_0``, ``lora_scale_1``, ... the scale of one of them.
- seeds: one seed for every cell unless ``seed`` is an axis (or ``vary_seed=True``, which gives
  cell k the seed ``base + images before k``, so no two images share a seed). A sweep without a
  seed draws one and remembers it in the store under the sweep's signature, so re-running the same
  sweep reuses its finished cells. ``cache=False`` keeps the remembered seed (it only skips the
  cache); ``new_seed=True`` draws a new one and remembers it; an explicit ``seed=`` is used as
  given and leaves the remembered seed alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import FieldError, FluxValidationError
from ..params import LIMITS, FluxRequest, ImageSize, LoraWeight, canonical_field
from .. import pricing
from .grammar import parse_values, split_list

if TYPE_CHECKING:  # pragma: no cover
    from ..store import Store

__all__ = [
    "Axis",
    "SweepPlan",
    "SweepSummary",
    "build_plan",
    "expand_prompt",
    "fill_template",
    "parse_axis_values",
    "format_value",
    "AXIS_TITLES",
]

#: The request fields that can be an axis.
SWEEPABLE_FIELDS = (
    "image_size",
    "num_inference_steps",
    "guidance_scale",
    "num_images",
    "seed",
    "enable_safety_checker",
    "output_format",
    "acceleration",
)
#: The request fields that can be given a fixed value (the prompt is the first argument).
_FIXED_FIELDS = (*SWEEPABLE_FIELDS, "loras", "sync_mode")
_INT_FIELDS = {"num_inference_steps", "num_images", "seed"}
_FLOAT_FIELDS = {"guidance_scale"}
_LORA_SCALE = re.compile(r"^lora_scale(?:_(\d+))?$")

#: Short titles for axis headers.
AXIS_TITLES = {
    "guidance_scale": "guidance",
    "num_inference_steps": "steps",
    "image_size": "size",
    "num_images": "images",
    "enable_safety_checker": "safety checker",
    "output_format": "format",
    "lora_scale": "LoRA scale",
    "lora": "LoRA",
}


@dataclass(frozen=True)
class Axis:
    """One swept dimension: its name (the key in ``cell.values``), its values and what it sets.

    ``kind`` is ``"field"`` (a request field), ``"prompt"``, ``"variable"`` (a ``{slot}`` of a
    prompt template), ``"lora"`` (one extra LoRA or none) or ``"lora_scale"``.
    """

    name: str
    values: tuple[Any, ...]
    kind: str = "field"

    def __len__(self) -> int:
        return len(self.values)

    @property
    def title(self) -> str:
        match = _LORA_SCALE.match(self.name)
        if match and match.group(1) is not None:
            return f"LoRA {match.group(1)} scale"
        return AXIS_TITLES.get(self.name, self.name)

    @property
    def labels(self) -> list[str]:
        return [format_value(v) for v in self.values]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "values": [_jsonable(v) for v in self.values]}


def format_value(value: Any) -> str:
    """A short label for an axis value: ``3.5``, ``2`` (not ``2.0``), ``none``, a LoRA file name."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    if isinstance(value, LoraWeight):
        name = value.path.rstrip("/").rsplit("/", 1)[-1]
        return name if value.scale == 1 else f"{name} @ {format_value(value.scale)}"
    if isinstance(value, ImageSize):
        return str(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return f"{value[0]}x{value[1]}"  # (width, height)
    if isinstance(value, Mapping) and set(value) == {"width", "height"}:
        return f"{value['width']}x{value['height']}"
    if isinstance(value, (tuple, list)):
        return " + ".join(format_value(v) for v in value) or "none"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (LoraWeight, ImageSize)):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class SweepSummary:
    """Counts and the estimated cost of a sweep (at fal's price; the local server is free).

    Identical cells (duplicate axis values: ``guidance=[1, 1]``) are one request, sent once, so
    ``requests``, ``images``, ``megapixels``, ``cost``, ``to_send`` and ``cost_to_send`` count
    distinct requests; ``cells``, ``cached`` and the statuses count cells.
    """

    cells: int
    images: int
    megapixels: int
    cost: float
    price_per_megapixel: float
    cached: int = 0
    to_send: int = 0
    cost_to_send: float = 0.0
    done: int = 0  # finished: generated now or taken from the cache
    failed: int = 0
    cancelled: int = 0
    pending: int = 0
    requests: int = -1  # distinct requests; -1: one per cell

    def __post_init__(self) -> None:
        if self.requests < 0:
            object.__setattr__(self, "requests", self.cells)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        shared = " (identical cells are sent once)" if self.requests < self.cells else ""
        text = (
            f"{self.cells} cell(s): {self.requests} request(s){shared}, {self.images} image(s), {self.megapixels} MP, "
            f"est. ${self.cost:.2f} at ${self.price_per_megapixel:g}/MP"
        )
        if self.pending:
            text += f"; {self.pending} pending"
            if self.cached:
                text += f" ({self.cached} in the cache, {self.to_send} request(s) to send: est. ${self.cost_to_send:.2f})"
        states = [f"{n} {name}" for name, n in (("finished", self.done), ("failed", self.failed),
                                                  ("cancelled", self.cancelled)) if n]
        if self.done and self.cached:
            states[0] += f" ({self.cached} from the cache)"
        if states:
            text += "; " + ", ".join(states)
        return text


@dataclass
class SweepPlan:
    """The axes, the cells' requests (in product order) and how the seed was chosen."""

    axes: list[Axis]
    requests: list[FluxRequest]
    values: list[dict[str, Any]]
    coords: list[tuple[int, ...]]
    seed: int | None
    seed_source: str  # "given", "axis", "remembered" or "drawn"
    vary_seed: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)


# -- prompts --------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{\s*([A-Za-z_]\w*)\s*\}")
# private-use characters keep {slots} and __wildcards__ away from the variant parser
_OPEN, _CLOSE, _UNDERSCORES = "\ue000", "\ue001", "\ue002"


def template_slots(template: str) -> list[str]:
    """The ``{name}`` slots of a prompt template, in order of first use."""
    seen: list[str] = []
    for match in _SLOT.finditer(template):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def fill_template(template: str, values: Mapping[str, Any]) -> str:
    """Replace ``{name}`` slots whose name is in ``values``; other braces are left alone."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(values[name]) if name in values else match.group(0)

    return _SLOT.sub(sub, template)


def expand_prompt(prompt: str, *, protect: Iterable[str] = (), limit: int | None = None) -> list[str]:
    """Every variant of a dynamic-prompts prompt (``a {red|blue} car`` -> two prompts), in order.

    ``{name}`` slots listed in ``protect`` are kept as they are. Wildcards (``__name__``) are not
    expanded: they stay literal text. ``limit`` caps how many variants are produced.
    """
    if "{" not in prompt:
        return [prompt]
    names = set(protect)

    def hide(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{_OPEN}{name}{_CLOSE}" if name in names else match.group(0)

    hidden = _SLOT.sub(hide, prompt).replace("__", _UNDERSCORES)
    if "{" not in hidden:
        return [prompt]
    from dynamicprompts.generators import CombinatorialPromptGenerator

    try:
        variants = list(CombinatorialPromptGenerator().generate(hidden, max_prompts=limit))
    except Exception as exc:  # the library's parse errors have no common base class
        raise FluxValidationError(
            [FieldError("prompt", prompt, f"cannot read the prompt variants: {exc}", "value_error")]
        ) from exc
    out = []
    for text in variants or [hidden]:
        text = text.replace(_UNDERSCORES, "__")
        text = text.replace(_OPEN, "{").replace(_CLOSE, "}")
        if text not in out:
            out.append(text)
    return out


# -- axis values ----------------------------------------------------------------------------------


def _is_listy(value: Any) -> bool:
    return isinstance(value, (list, tuple, range))


def parse_axis_values(name: str, text: str) -> list[Any]:
    """Values for an axis given as text (as the magic's ``-x NAME=VALUES`` does).

    Numeric fields use the grammar (:func:`~flux_nb.sweeps.grammar.parse_values`); the others are
    comma-separated (quotes protect commas); ``lora`` accepts ``none`` for "without".
    """
    field_name = _field_of(name)
    if field_name in _INT_FIELDS:
        return parse_values(text, integer=True, field=name)
    if field_name in _FLOAT_FIELDS or _LORA_SCALE.match(name):
        return parse_values(text, field=name)
    items = split_list(text, field=name)
    if field_name == "enable_safety_checker":
        out = []
        for item in items:
            low = item.lower()
            if low not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                raise FluxValidationError([FieldError(name, item, "must be true or false", "type_error")])
            out.append(low in ("true", "on", "1", "yes"))
        return out
    if name == "lora":
        return [None if item.lower() in ("none", "off", "") else item for item in items]
    return items


def _field_of(name: str) -> str:
    return "lora" if name == "lora" else canonical_field(name)


def _normalise_lora(value: Any, where: str) -> tuple[LoraWeight, ...]:
    """An axis value of ``lora``: None (no extra LoRA), one LoRA, ``(path, scale)``, or a list of LoRAs."""
    if value is None:
        return ()
    if _is_pair(value):
        items: list[Any] = [{"path": value[0], "scale": value[1]}]
    elif isinstance(value, (list, tuple)):
        items = [{"path": v[0], "scale": v[1]} if _is_pair(v) else v for v in value]
    else:
        items = [value]
    # validated by FluxRequest itself, so the messages are the usual ones
    try:
        return FluxRequest("x", loras=items).loras
    except FluxValidationError as exc:
        raise FluxValidationError(
            [FieldError(f"{where}{e.field[len('loras'):]}", e.value, e.message, e.kind) for e in exc.errors]
        ) from None


def _is_pair(value: Any) -> bool:
    # ("path", 0.8) reads as one LoRA with a scale
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and not isinstance(value[1], str)


def _axis_values(name: str, value: Any) -> list[Any] | None:
    """The values if ``value`` makes ``name`` an axis, else None (a fixed field)."""
    field_name = _field_of(name)
    if field_name == "loras":
        # the full LoRA list is fixed; but a list holding None can only mean on/off: read it as lora=[...]
        if _is_listy(value) and any(v is None for v in value):
            return list(value)
        return None
    if field_name == "lora":
        if not _is_listy(value) or _is_pair(value):
            return None
        return list(value)
    if field_name == "image_size" and isinstance(value, tuple) and len(value) == 2 and all(
        isinstance(v, int) for v in value
    ):
        return None  # (width, height) is one size
    if _is_listy(value):
        return list(value)
    if isinstance(value, str) and (field_name in _INT_FIELDS or field_name in _FLOAT_FIELDS or _LORA_SCALE.match(name)):
        return parse_axis_values(name, value)
    return None


# -- the plan -------------------------------------------------------------------------------------


def build_plan(
    prompt: Any,
    fields: Mapping[str, Any],
    *,
    variables: Mapping[str, Any] | None = None,
    vary_seed: bool = False,
    max_cells: int | None = 256,
    store: "Store | None" = None,
    new_seed: bool = False,
) -> SweepPlan:
    """Turn ``sweep()``'s arguments into axes and one validated request per cell.

    ``variables`` are a template's ``{slot}`` values (lists make axes). ``store`` remembers the
    seed of an unseeded sweep; ``new_seed=True`` draws a fresh one even if one was remembered.
    Raises :class:`FluxValidationError` for unknown fields, bad values (naming the cell's axis
    values) and sweeps over ``max_cells``.
    """
    errors: list[FieldError] = []
    axes: list[Axis] = []
    fixed: dict[str, Any] = {}
    fixed_loras: list[Any] = []
    fixed_lora_extra: tuple[LoraWeight, ...] = ()
    scale_fixed: dict[str, float] = {}
    variables = dict(variables or {})
    slot_names = [n for n in variables]

    # the prompt axis comes first: the prompt is the first argument
    if _is_listy(prompt):
        prompts = [p for p in prompt]
        if not prompts:
            errors.append(FieldError("prompt", prompt, "the list of prompts is empty", "value_error"))
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                errors.append(FieldError(f"prompt.{i}", p, "must be a non-empty string", "type_error"))
        if len(prompts) > 1:
            axes.append(Axis("prompt", tuple(prompts), "prompt"))
            base_prompt = None
        else:
            base_prompt = prompts[0] if prompts else ""
    elif isinstance(prompt, str) and prompt.strip():
        variants = expand_prompt(prompt, protect=slot_names, limit=(max_cells + 1) if max_cells else None)
        if len(variants) > 1:
            axes.append(Axis("prompt", tuple(variants), "prompt"))
            base_prompt = None
        else:
            base_prompt = variants[0]
    else:
        errors.append(FieldError("prompt", prompt, "must be a non-empty string or a list of prompts", "type_error"))
        base_prompt = ""

    fixed_variables: dict[str, Any] = {}
    for name, value in variables.items():
        if _is_listy(value):
            values = list(value)
            if not values:
                errors.append(FieldError(name, value, "an axis needs at least one value", "value_error"))
            else:
                axes.append(Axis(name, tuple(values), "variable"))
        else:
            fixed_variables[name] = value

    seed_given: Any = None
    seed_is_axis = False
    for key, value in fields.items():
        name = key if key == "lora" or _LORA_SCALE.match(key) else canonical_field(key)
        try:
            values = _axis_values(name, value)
        except FluxValidationError as exc:
            errors.extend(exc.errors)
            continue
        if name == "loras" and values is not None:
            name = "lora"
        special = name in ("lora", "loras") or _LORA_SCALE.match(name)
        if not special and name not in _FIXED_FIELDS:
            errors.append(_unknown(key, value))
            continue
        if values is not None and not special and name not in SWEEPABLE_FIELDS:
            errors.append(FieldError(key, value, f"{key} cannot be swept; give one value", "value_error"))
            continue
        if values is None:
            if name == "seed":
                seed_given = value
            elif name == "loras":
                fixed_loras = list(value) if _is_listy(value) else [value]
            elif name == "lora":
                try:
                    fixed_lora_extra = _normalise_lora(value, "lora")
                except FluxValidationError as exc:
                    errors.extend(exc.errors)
            elif _LORA_SCALE.match(name):
                scale_fixed[name] = value
            else:
                fixed[name] = value
            continue
        if not values:
            errors.append(FieldError(key, value, "an axis needs at least one value", "value_error"))
            continue
        if name == "lora":
            try:
                values = [_normalise_lora(v, f"lora.{i}") for i, v in enumerate(values)]
            except FluxValidationError as exc:
                errors.extend(exc.errors)
                continue
            axes.append(Axis("lora", tuple(values), "lora"))
        elif _LORA_SCALE.match(name):
            axes.append(Axis(name, tuple(values), "lora_scale"))
        else:
            if name == "seed":
                seed_is_axis = True
            axes.append(Axis(name, tuple(values), "field"))

    if new_seed and (seed_given is not None or seed_is_axis):
        errors.append(
            FieldError("new_seed", True, "draws a new seed for a sweep without one; give seed= or new_seed=True, not both",
                       "value_error")
        )
    names = [a.name for a in axes]
    for name in set(names):
        if names.count(name) > 1:
            errors.append(FieldError(name, name, "is given as an axis twice", "duplicate"))
    if errors:
        raise FluxValidationError(errors)

    count = math.prod(len(a) for a in axes) if axes else 1
    if max_cells is not None and count > max_cells:
        shape = " x ".join(f"{len(a)} {a.name}" for a in axes)
        raise FluxValidationError(
            [
                FieldError(
                    "max_cells",
                    count,
                    f"this sweep has {count} cells ({shape}), more than max_cells={max_cells}; "
                    f"pass max_cells={count} (or more) to run it, or dry_run=True to see its cost first",
                    "range",
                )
            ]
        )

    requests: list[FluxRequest] = []
    values_list: list[dict[str, Any]] = []
    coords_list: list[tuple[int, ...]] = []
    bad: dict[tuple[str, str], tuple[FieldError, str]] = {}
    for coords in itertools.product(*(range(len(a)) for a in axes)):
        cell_values = {a.name: a.values[i] for a, i in zip(axes, coords)}
        try:
            request = _cell_request(
                base_prompt, fixed, fixed_variables, fixed_loras, fixed_lora_extra, scale_fixed, axes, coords,
                seed=None if seed_is_axis else seed_given,
            )
        except FluxValidationError as exc:
            where = ", ".join(f"{k}={format_value(v)}" for k, v in cell_values.items())
            for e in exc.errors:
                bad.setdefault((e.field, repr(e.value)), (e, where))
            continue
        requests.append(request)
        values_list.append(cell_values)
        coords_list.append(coords)
    if bad:
        raise FluxValidationError(summarise_cell_errors(list(bad.values()), axes))

    # seeds
    if seed_is_axis:
        seed, source = None, "axis"
    else:
        if seed_given is not None:
            seed, source = int(seed_given), "given"
        else:
            drawn = random.SystemRandom().randrange(0, 2**32)
            if store is not None:
                signature = plan_signature(requests, vary_seed)
                seed = store.sweep_seed(signature, drawn, renew=new_seed)
                source = "remembered" if seed != drawn else "drawn"
            else:
                seed, source = drawn, "drawn"
        requests = _apply_seeds(requests, seed, vary_seed)

    return SweepPlan(
        axes=axes,
        requests=requests,
        values=values_list,
        coords=coords_list,
        seed=seed,
        seed_source=source,
        vary_seed=vary_seed,
        fixed=dict(fixed),
    )


#: More bad values than this for one field are reported as one summary error.
SUMMARY_THRESHOLD = 3


def summarise_cell_errors(bad: Sequence[tuple[FieldError, str]], axes: Sequence[Axis]) -> list[FieldError]:
    """The errors of invalid cells, one per field and kind when a field has many bad values.

    ``bad`` holds each distinct (field, value) error with the cell it was found in (``where``). A
    field with at most :data:`SUMMARY_THRESHOLD` bad values keeps one error per value, naming its
    cell; more are summarised: ``guidance_scale: 330 of 400 values out of range 0..35, e.g. 36,
    37, 38, ...`` (the error's ``value`` is the list of bad values). Pure.
    """
    groups: dict[tuple[str, str], list[tuple[FieldError, str]]] = {}
    for error, where in bad:
        groups.setdefault((error.field, error.kind), []).append((error, where))
    lengths = {a.name: len(a) for a in axes}
    out: list[FieldError] = []
    for (field_name, kind), items in groups.items():
        if len(items) <= SUMMARY_THRESHOLD:
            for e, where in items:
                message = f"{e.message} (in the cell {where})" if where else e.message
                out.append(FieldError(e.field, e.value, message, e.kind))
            continue
        values = [e.value for e, _ in items]
        total = lengths.get(field_name)
        count = f"{len(values)} of {total} values" if total and total >= len(values) else f"{len(values)} values"
        limits = LIMITS.get("lora_scale" if field_name.endswith(".scale") else field_name)
        if kind == "range" and limits is not None:
            what = f"out of range {format_value(float(limits[0]))}..{format_value(float(limits[1]))}"
        else:
            what = f"invalid ({items[0][0].message})"
        examples = ", ".join(format_value(v) for v in values[:SUMMARY_THRESHOLD])
        out.append(FieldError(field_name, values, f"{count} {what}, e.g. {examples}, ...", kind))
    return out


def _unknown(key: str, value: Any) -> FieldError:
    import difflib

    allowed = [*_FIXED_FIELDS, "lora", "lora_scale", "lora_scale_N", "steps", "guidance", "size", "n"]
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return FieldError(key, value, f"is not a request field or sweep axis; {hint}", "extra")


def _cell_request(
    base_prompt: str | None,
    fixed: Mapping[str, Any],
    fixed_variables: Mapping[str, Any],
    fixed_loras: Sequence[Any],
    fixed_lora_extra: tuple[LoraWeight, ...],
    scale_fixed: Mapping[str, Any],
    axes: Sequence[Axis],
    coords: Sequence[int],
    *,
    seed: Any,
) -> FluxRequest:
    fields = dict(fixed)
    prompt = base_prompt
    variables = dict(fixed_variables)
    extra = fixed_lora_extra
    scales = dict(scale_fixed)
    for axis, i in zip(axes, coords):
        value = axis.values[i]
        if axis.kind == "prompt":
            prompt = value
        elif axis.kind == "variable":
            variables[axis.name] = value
        elif axis.kind == "lora":
            extra = value
        elif axis.kind == "lora_scale":
            scales[axis.name] = value
        else:
            fields[axis.name] = value
    if variables:
        prompt = fill_template(prompt or "", variables)
    loras = list(fixed_loras) + list(extra)
    if scales:
        loras = _apply_scales(FluxRequest("x", loras=loras).loras, scales)
    if seed is not None and "seed" not in fields:
        fields["seed"] = seed
    return FluxRequest(prompt, loras=loras, **fields)


def _apply_scales(loras: tuple[LoraWeight, ...], scales: Mapping[str, Any]) -> list[LoraWeight]:
    out = list(loras)
    for name, scale in scales.items():
        index = _LORA_SCALE.match(name).group(1)  # type: ignore[union-attr]
        if not out:
            raise FluxValidationError([FieldError(name, scale, "there is no LoRA to scale; add loras=[...] or lora=[...]", "value_error")])
        if index is None:
            out = [LoraWeight(l.path, scale) for l in out]
        elif int(index) >= len(out):
            raise FluxValidationError(
                [FieldError(name, scale, f"there is no LoRA number {index}; the request has {len(out)} (counting from 0)", "value_error")]
            )
        else:
            i = int(index)
            out[i] = LoraWeight(out[i].path, scale)
    return out


def _apply_seeds(requests: list[FluxRequest], seed: int, vary_seed: bool) -> list[FluxRequest]:
    lo, hi = LIMITS["seed"]
    out = []
    offset = 0
    for request in requests:
        cell_seed = (seed + offset) % (int(hi) + 1) if vary_seed else seed
        out.append(request.replace(seed=cell_seed))
        offset += request.num_images  # image i of a job uses seed + i: no two images share a seed
    return out


def plan_signature(requests: Sequence[FluxRequest], vary_seed: bool) -> str:
    """A stable hash of a sweep's cells (seeds left out): the key of its remembered seed."""
    blob = json.dumps(
        {"vary_seed": vary_seed, "cells": [r.replace(seed=None).cache_key() for r in requests]},
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def summarise(
    requests: Sequence[FluxRequest],
    statuses: Sequence[str] | None = None,
    cached_flags: Sequence[bool] | None = None,
    price_per_megapixel: float | None = None,
    *,
    keys: Sequence[str] | None = None,
) -> SweepSummary:
    """The counts and cost of a list of cell requests (``cached_flags``: already in the store).

    ``keys`` identify each cell's generation (:attr:`SweepCell.key`): cells with equal keys are
    one request, counted once in the requests, images, megapixels and cost. Without keys every
    cell is its own request.
    """
    price = pricing.PRICE_PER_MEGAPIXEL if price_per_megapixel is None else price_per_megapixel
    statuses = list(statuses or ["pending"] * len(requests))
    flags = list(cached_flags or [s == "cached" for s in statuses])
    firsts: dict[Any, int] = {}
    for k, key in enumerate(keys if keys is not None else range(len(requests))):
        firsts.setdefault(key, k)
    distinct = [requests[k] for k in firsts.values()]
    mps = [pricing.request_megapixels(r) for r in distinct]
    to_send = [mp for mp, k in zip(mps, firsts.values()) if not flags[k]]
    return SweepSummary(
        cells=len(requests),
        requests=len(distinct),
        images=sum(r.num_images for r in distinct),
        megapixels=sum(mps),
        cost=sum(mps) * price,
        price_per_megapixel=price,
        cached=sum(flags),
        to_send=len(to_send),
        cost_to_send=sum(to_send) * price,
        done=sum(s in ("done", "cached") for s in statuses),
        failed=statuses.count("failed"),
        cancelled=statuses.count("cancelled"),
        pending=statuses.count("pending"),
    )
