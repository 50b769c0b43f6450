"""The A1111 X/Y/Z value grammar: examples and property tests."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_nb.errors import FluxValidationError
from flux_nb.sweeps.grammar import MAX_VALUES, parse_values, split_list


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2,3.5,5", [2.0, 3.5, 5.0]),
        ("1-5", [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("5-1", [5.0, 4.0, 3.0, 2.0, 1.0]),
        ("1-9 (+2)", [1.0, 3.0, 5.0, 7.0, 9.0]),
        ("9-1 (+2)", [9.0, 7.0, 5.0, 3.0, 1.0]),
        ("9-1 (-2)", [9.0, 7.0, 5.0, 3.0, 1.0]),
        ("1-10 (+3)", [1.0, 4.0, 7.0, 10.0]),
        ("1-10 (+4)", [1.0, 5.0, 9.0]),
        ("0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("1-0 [3]", [1.0, 0.5, 0.0]),
        ("0-1 (+0.1)", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        ("-1--3", [-1.0, -2.0, -3.0]),
        ("2, 3-4, 7.5", [2.0, 3.0, 4.0, 7.5]),
        ("3 - 3", [3.0]),
        ("0.5-1.5 [1]", [0.5]),
    ],
)
def test_examples(text, expected):
    assert parse_values(text) == expected


def test_integer_fields():
    assert parse_values("10-50 [5]", integer=True) == [10, 20, 30, 40, 50]
    assert parse_values("1-10 [3]", integer=True) == [1, 6, 10]  # evenly spaced points are rounded
    assert parse_values("20-10 (+5)", integer=True) == [20, 15, 10]
    assert all(type(v) is int for v in parse_values("1-3", integer=True))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1-x", "'1-x'"),
        ("abc", "'abc'"),
        ("1,,2", "empty item"),
        ("", "empty"),
        ("1-2 (0)", "non-zero"),
        ("1-2 [0]", "at least 1"),
        ("0-1e9", "limit"),
    ],
)
def test_errors_name_the_bad_text(text, fragment):
    with pytest.raises(FluxValidationError) as info:
        parse_values(text, field="guidance_scale")
    assert fragment in str(info.value)
    assert info.value.errors[0].field == "guidance_scale"


@pytest.mark.parametrize("text, fragment", [("1.5", "whole numbers"), ("1-3 (+0.5)", "whole numbers"), ("1-2 [5]", "repeated")])
def test_integer_errors(text, fragment):
    with pytest.raises(FluxValidationError) as info:
        parse_values(text, integer=True, field="num_inference_steps")
    assert fragment in str(info.value) and "num_inference_steps" in str(info.value)


def test_split_list_keeps_quoted_commas():
    assert split_list('square, "a, b", landscape_4_3') == ["square", "a, b", "landscape_4_3"]


ends = st.floats(min_value=-1000, max_value=1000, allow_nan=False).map(lambda x: round(x, 3))


@settings(max_examples=200, deadline=None)
@given(a=ends, b=ends, n=st.integers(min_value=2, max_value=200))
def test_count_form_has_n_points_both_ends_exact_and_monotonic(a, b, n):
    values = parse_values(f"{a}-{b} [{n}]")
    assert len(values) == n
    assert values[0] == a and values[-1] == b
    pairs = list(zip(values, values[1:]))
    if b >= a:
        assert all(x <= y for x, y in pairs)
    else:
        assert all(x >= y for x, y in pairs)
    assert all(min(a, b) <= v <= max(a, b) for v in values)  # no overshoot


@settings(max_examples=200, deadline=None)
@given(
    a=ends,
    b=ends,
    step=st.floats(min_value=0.01, max_value=100, allow_nan=False).map(lambda x: round(x, 2)).filter(lambda x: x > 0),
)
def test_step_form_counts_direction_and_no_overshoot(a, b, step):
    span = abs(b - a)
    expected = math.floor(span / step + 1e-9) + 1
    if expected > MAX_VALUES:
        with pytest.raises(FluxValidationError):
            parse_values(f"{a}-{b} (+{step})")
        return
    values = parse_values(f"{a}-{b} (+{step})")
    assert len(values) == expected
    assert values[0] == a
    assert all(min(a, b) - 1e-9 <= v <= max(a, b) + 1e-9 for v in values)  # never past the end
    direction = 1 if b >= a else -1
    for k, v in enumerate(values):  # by index, not accumulated
        assert math.isclose(v, a + direction * step * k, rel_tol=1e-9, abs_tol=1e-9)
    if math.isclose(span / step, round(span / step), abs_tol=1e-9):
        assert values[-1] == b  # the end is included when the steps land on it


@settings(max_examples=100, deadline=None)
@given(a=st.integers(-500, 500), b=st.integers(-500, 500))
def test_unit_ranges_are_inclusive_both_ways(a, b):
    values = parse_values(f"{a}-{b}", integer=True)
    assert values == (list(range(a, b + 1)) if b >= a else list(range(a, b - 1, -1)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda x: round(x, 2)), min_size=1, max_size=10))
def test_lists_round_trip(items):
    assert parse_values(",".join(repr(x) for x in items)) == [x + 0.0 for x in items]


@pytest.mark.parametrize(
    "text",
    ["0-1 (+1e-320)", "-1e308-1e308", "-1e308-1e308 [3]", "1e308--1e308 (+1e300)", "0-1e300 (+1e-300)"],
)
def test_huge_spans_and_tiny_steps_are_validation_errors(text):
    # the span or span/step overflows a float: a clear error naming the axis, never OverflowError or nan
    with pytest.raises(FluxValidationError) as info:
        parse_values(text, field="guidance_scale")
    assert info.value.errors[0].field == "guidance_scale"
    assert text.strip() in str(info.value)


def test_huge_but_finite_count_ranges_stay_finite():
    values = parse_values("-1e307-1e307 [3]")
    assert values == [-1e307, 0.0, 1e307] and all(math.isfinite(v) for v in values)
    values = parse_values("-8e307-8e307 [4]")  # span * k would overflow; span * (k / (n - 1)) does not
    assert len(values) == 4 and all(math.isfinite(v) for v in values) and values == sorted(values)
