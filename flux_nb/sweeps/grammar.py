"""The A1111 X/Y/Z value grammar for sweep axes, without A1111's quirks.

A value string is a comma-separated list of items; each item is one of::

    3.5            a single value
    1-5            an inclusive range, step 1 (5-1 counts down: 5, 4, 3, 2, 1)
    1-9 (+2)       a range with a step: 1, 3, 5, 7, 9 (the step's sign is ignored; the
                   direction comes from the ends, so 9-1 (+2) gives 9, 7, 5, 3, 1)
    0-1 [5]        n evenly spaced points, both ends included: 0, 0.25, 0.5, 0.75, 1

Values are computed by index (``start + k * step``), never by repeated addition, and rounded to 12
significant digits, so ``0-1 (+0.1)`` ends at exactly ``1`` and never overshoots it. Every function
here is pure.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import FieldError, FluxValidationError

__all__ = ["MAX_VALUES", "parse_values", "split_list"]

#: The most values one value string may produce (guards against ``1-1e9``).
MAX_VALUES = 10_000

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(
    rf"^\s*(?P<a>{_NUM})\s*-\s*(?P<b>{_NUM})\s*"
    rf"(?:\(\s*(?P<step>{_NUM})\s*\)|\[\s*(?P<count>[+-]?\d+)\s*\])?\s*$"
)
_SINGLE = re.compile(rf"^\s*{_NUM}\s*$")

_HELP = "expected a number, 'A-B', 'A-B (+STEP)' or 'A-B [COUNT]'"


def _error(field: str, text: str, message: str) -> FluxValidationError:
    return FluxValidationError([FieldError(field, text, message, "value_error")])


def _tidy(value: float) -> float:
    """Round away binary noise (0.30000000000000004 -> 0.3) and negative zero."""
    out = float(f"{value:.12g}")
    return out + 0.0


def split_list(text: str, *, field: str = "axis") -> list[str]:
    """Split ``"a, b, 'c, d'"`` on commas outside quotes, stripping spaces and quotes.

    Text the CSV reader cannot take (a line break outside quotes) is a FluxValidationError naming ``field``.
    """
    import csv

    try:
        row = next(csv.reader([text], skipinitialspace=True, quotechar='"'), [])
    except csv.Error as exc:
        raise _error(field, text, f"cannot read the comma-separated values: {exc}") from None
    out = []
    for item in row:
        item = item.strip()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            item = item[1:-1]
        out.append(item)
    return out


def _expand_item(item: str, field: str) -> tuple[list[float], bool]:
    """The item's values, and whether they are evenly spaced points (which may be rounded)."""
    if _SINGLE.match(item):
        value = float(item)
        if not math.isfinite(value):  # 1e309 reads as infinity
            raise _error(field, item, f"cannot read {item.strip()!r}: values must be finite numbers")
        return [value], False
    match = _RANGE.match(item)
    if not match:
        raise _error(field, item, f"cannot read {item.strip()!r}: {_HELP}")
    a, b = float(match["a"]), float(match["b"])
    if not (math.isfinite(a) and math.isfinite(b)):
        raise _error(field, item, f"cannot read {item.strip()!r}: the ends must be finite numbers")
    # -1e308-1e308 spans more than a float holds: refuse it rather than give nan or inf values
    if not math.isfinite(b - a):
        raise _error(field, item, f"{item.strip()!r}: the range from {a:g} to {b:g} is too wide to compute")
    if match["count"] is not None:
        count = int(match["count"])
        if count < 1:
            raise _error(field, item, f"{item.strip()!r}: the count in [ ] must be at least 1")
        if count > MAX_VALUES:
            raise _error(field, item, f"{item.strip()!r} gives {count} values; the limit is {MAX_VALUES}")
        if count == 1:
            return [a], True
        span = b - a
        # by index, and the last point is b itself: no drift, no overshoot
        return [a + span * (k / (count - 1)) if k < count - 1 else b for k in range(count)], True
    step = abs(float(match["step"])) if match["step"] is not None else 1.0
    if step == 0 or not math.isfinite(step):
        raise _error(field, item, f"{item.strip()!r}: the step in ( ) must be a non-zero number")
    direction = 1.0 if b >= a else -1.0
    span = abs(b - a)
    ratio = span / step
    # a tiny step (0-1 (+1e-320)) makes the ratio infinite; compare before converting to int
    if not math.isfinite(ratio) or ratio >= MAX_VALUES:
        raise _error(field, item, f"{item.strip()!r} gives more than {MAX_VALUES} values; the limit is {MAX_VALUES}")
    # a small tolerance so that 0-1 (+0.1) reaches 1 despite 1/0.1 being 9.999...
    n = math.floor(ratio + 1e-9) + 1
    if n > MAX_VALUES:
        raise _error(field, item, f"{item.strip()!r} gives {n} values; the limit is {MAX_VALUES}")
    values = [a + direction * step * k for k in range(n)]
    if abs(values[-1] - b) <= 1e-9 * max(1.0, abs(b)):
        values[-1] = b
    return values, False


def parse_values(text: str, *, integer: bool = False, field: str = "axis") -> list[Any]:
    """Expand a value string such as ``"1-9 (+2)"`` or ``"2,3.5,5"`` into a list of numbers.

    ``integer=True`` returns ints: evenly spaced points (``1-10 [3]``) are rounded to the nearest
    whole number, any other value that is not whole is refused, and so are points that round to
    repeats (``1-2 [5]``). Errors are a :class:`FluxValidationError` naming ``field`` and the
    text that could not be read.
    """
    if not isinstance(text, str) or not text.strip():
        raise _error(field, text, f"an empty value list: {_HELP}")
    items = text.split(",")
    values: list[float] = []
    out: list[int] = []
    for item in items:
        if not item.strip():
            raise _error(field, text, f"an empty item in {text.strip()!r}: {_HELP}")
        item_values, spaced = _expand_item(item, field)
        values.extend(item_values)
        if len(values) > MAX_VALUES:
            raise _error(field, text, f"{text.strip()!r} gives more than {MAX_VALUES} values")
        if not integer:
            continue
        rounded = [int(round(v)) for v in item_values]
        if not spaced:
            for v, r in zip(item_values, rounded):
                if abs(v - r) > 1e-6:
                    raise _error(field, text, f"{item.strip()!r} gives {_tidy(v)}, but {field} takes whole numbers")
        elif len(set(rounded)) < len(rounded):
            raise _error(
                field, text, f"{item.strip()!r} rounds to repeated whole numbers {rounded}; use fewer points or a wider range"
            )
        out.extend(rounded)
    return out if integer else [_tidy(v) for v in values]
