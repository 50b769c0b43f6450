"""Bad input under property-based tests: the documented error, naming the field, and nothing else escapes.

- ``FluxRequest.from_dict`` (what the server does with a body): any JSON value gives a request or a
  :class:`FluxValidationError` whose fields are real request fields; breaking one field of a valid
  request names exactly that field.
- The magic's option parser: any line gives options or a one-line :class:`MagicUsageError`.
- The magic itself in a real InteractiveShell: one ``flux: ...`` line (plus usage), never a traceback.
- The sweep grammar and axis parser: a list of numbers or a FluxValidationError naming the axis;
  ranges end exactly on their end and never overshoot.
"""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from flux_nb.errors import FluxValidationError
from flux_nb.magic_args import MagicUsageError, parse_line, parse_options
from flux_nb.params import FIELD_ALIASES, IMAGE_SIZE_PRESETS, FluxRequest
from flux_nb.sweeps.grammar import MAX_VALUES, parse_values
from flux_nb.sweeps.plan import parse_axis_values

FIELDS = ("prompt", "image_size", "num_inference_steps", "guidance_scale", "num_images", "seed", "loras",
          "enable_safety_checker", "output_format", "sync_mode", "acceleration")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
valid_sizes = st.sampled_from(sorted(IMAGE_SIZE_PRESETS)) | st.fixed_dictionaries(
    {"width": st.integers(1, 14142), "height": st.integers(1, 14142)}
)
valid_requests = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=40).filter(str.strip)},
    optional={
        "image_size": valid_sizes,
        "num_inference_steps": st.integers(1, 50),
        "guidance_scale": st.floats(0, 35),
        "num_images": st.integers(1, 4),
        "seed": st.integers(0, 2**63 - 1),
        "loras": st.lists(st.fixed_dictionaries({"path": st.text(min_size=1, max_size=20).filter(str.strip),
                                                 "scale": st.floats(-4, 4)}), max_size=3),
        "enable_safety_checker": st.booleans(),
        "output_format": st.sampled_from(["jpeg", "png"]),
        "sync_mode": st.booleans(),
        "acceleration": st.sampled_from(["none", "regular"]),
    },
)
# One bad value per field, each outside what the field allows.
BAD_VALUES = {
    "prompt": st.sampled_from(["", "   ", None, 5, ["a"], {"text": "x"}]),
    "image_size": st.sampled_from(["squar", "", "0x0", {"width": 0, "height": 5}, {"width": 99999, "height": 5},
                                   {"width": "a", "height": 5}, [1], 3.5, True, None]),
    "num_inference_steps": st.integers(max_value=0) | st.integers(min_value=51) | st.sampled_from([2.5, "10", True, None, math.nan]),
    "guidance_scale": st.floats(max_value=-0.001) | st.floats(min_value=35.001) | st.sampled_from(
        [math.nan, math.inf, "3.5", True, None]),
    "num_images": st.integers(max_value=0) | st.integers(min_value=5) | st.sampled_from([1.5, "2", False]),
    "seed": st.integers(max_value=-1) | st.integers(min_value=2**63) | st.sampled_from([1.5, "7", True]),
    # (a bare string or a single mapping is accepted as one LoRA: a documented convenience)
    "loras": st.sampled_from([[{"scale": 1}], [{"path": "", "scale": 1}], [{"path": "a", "scale": 99}],
                              [{"path": "a", "scale": "big"}], [5], [{"path": "a", "weight": 1}], 7]),
    "enable_safety_checker": st.sampled_from(["yes", 1, 0, None, "false"]),
    "output_format": st.sampled_from(["gif", "", "JPEG ", None, 1]),
    "sync_mode": st.sampled_from(["true", 1, None]),
    "acceleration": st.sampled_from(["fast", "", None, 1]),
}


def top_field(name: str) -> str:
    return name.split(".", 1)[0].split("[", 1)[0]


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_from_dict_on_any_json_gives_a_request_or_a_validation_error(data):
    try:
        request = FluxRequest.from_dict(data)
    except FluxValidationError as exc:
        assert exc.errors, "a validation error lists at least one field"
        for error in exc.errors:
            assert error.message
            # a request field, the body itself, or the unknown key exactly as given
            assert top_field(error.field) in (*FIELDS, "body") or (isinstance(data, dict) and error.field in map(str, data))
            entry = error.to_fal()
            assert entry["loc"][0] == "body" and entry["msg"] and entry["type"]
        return
    assert FluxRequest.from_dict(request.to_dict()) == request


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=15), json_scalars, max_size=6))
def test_from_dict_with_unknown_or_alias_keys_names_them(data):
    data = {"prompt": "a fox", **data}
    unknown = [k for k in data if k not in FIELDS]
    try:
        FluxRequest.from_dict(data)
    except FluxValidationError as exc:
        if unknown:
            # every unknown key is named, even next to a bad value in a known field
            assert set(unknown) <= set(exc.fields), (unknown, exc.fields)
        return
    assert not unknown
    assert not set(data) & set(FIELD_ALIASES)


@settings(max_examples=300, deadline=None)
@given(valid_requests, st.sampled_from(sorted(BAD_VALUES)), st.data())
def test_one_bad_field_is_named_with_its_value(valid, field, data):
    FluxRequest.from_dict(valid)  # the base is valid
    bad = data.draw(BAD_VALUES[field])
    broken = {**valid, field: bad}
    with pytest.raises(FluxValidationError) as info:
        FluxRequest.from_dict(broken)
    fields = {top_field(f) for f in info.value.fields}
    assert fields == {field}, (field, bad, info.value.fields)
    assert field in str(info.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "×éü\u200b", max_size=60))
@example('--steps "10')
@example("--seed -1 --lora")
@example("-x guidance=1-1e9")
@example("res << --size 0x0")
@example("--size")
@example("--help")
@example("-h")
@example("--key sk-123")
def test_option_parser_gives_options_or_one_line_usage_error(line):
    try:
        parse_line(line)
    except MagicUsageError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message.strip()
    try:
        parse_options(line)
    except MagicUsageError as exc:
        assert "\n" not in str(exc).strip()


TOKENS = st.sampled_from([
    "--size", "--steps", "-g", "-n", "-s", "--lora", "--format", "--no-safety", "--acceleration", "--seed",
    "--guidance", "--num-images", "--no-cache", "--sync", "--bogus", "-q", "--key", "--token",
])
VALUES = st.sampled_from([
    "64x64", "0x0", "square", "squar", "1", "0", "-3", "99", "2.5", "abc", "", "'quoted value'", '"', "nan", "inf",
    "1e9", "x.safetensors:0.5", "a:b:c", "png", "gif", "regular", "fast", "{{ missing }}",
])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(TOKENS, VALUES), min_size=1, max_size=4), st.sampled_from(["a fox", "", "{{ nope }}", "a {red|blue} car"]))
def test_magic_in_a_real_shell_prints_one_line_never_a_traceback(magic_shell, capsys, pairs, body):
    line = " ".join(f"{token} {value}" for token, value in pairs)
    capsys.readouterr()
    outcome = magic_shell.run_cell(f"%%flux {line}\n{body}")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured
    # IPython's own refusal of an empty %%flux cell is one "UsageError:" line too
    assert outcome.error_in_exec is None or type(outcome.error_in_exec).__name__ == "UsageError"
    # the backend announcement ("flux-nb: ...") is not an error line
    errors = [l for l in (captured.out + captured.err).splitlines() if l.strip() and not l.startswith("flux-nb:")]
    errors = [l for l in errors if l.startswith(("flux:", "usage:", "UsageError"))]
    if errors:
        assert errors[0].startswith(("flux: ", "UsageError: ")), errors
        assert len(errors) <= 2 and (len(errors) == 1 or errors[1].startswith("usage:")), errors


def test_magic_refuses_keys_as_options_with_a_hint(magic_shell, capsys):
    for line in ("--key sk-live-123", "--fal-key=abc", "--token abc", "FAL_KEY=abc"):
        magic_shell.run_cell(f"%%flux {line}\na fox")
        err = capsys.readouterr().err
        assert "%flux login" in err and "abc" not in err and "sk-live-123" not in err
        assert "Traceback" not in err


@pytest.fixture
def magic_shell(live_server, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    server = live_server(workers=4)
    monkeypatch.setenv("FLUX_NB_ENDPOINT", server.url)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "flux_nb")
    shell.run_line_magic("config", "FluxMagics.image_size = '64x64'")
    shell.run_line_magic("config", "FluxMagics.num_inference_steps = 2")
    yield shell
    InteractiveShell.clear_instance()


# -- the sweep grammar ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789.-+eE,()[] x\n", max_size=25), st.booleans())
@example("1-1e9", False)
@example("1e309", False)
@example("1\n2", True)
@example("0-1 [100001]", False)
@example("1-2 [5]", True)
@example("5-1 (+0)", False)
@example("1e400-2", False)
def test_grammar_gives_numbers_or_an_error_naming_the_axis(text, integer):
    try:
        values = parse_values(text, integer=integer, field="guidance")
    except FluxValidationError as exc:
        assert exc.fields == ["guidance"]
        return
    assert 1 <= len(values) <= MAX_VALUES
    assert all(math.isfinite(v) for v in values)
    if integer:
        assert all(isinstance(v, int) for v in values)


@pytest.mark.parametrize("text", ["1e309", "-1e309", "1e309-2", "1-2 (+1e309)", "1\n2", "1\r2"])
def test_overflowing_numbers_and_broken_lines_are_errors_naming_the_axis(text):
    with pytest.raises(FluxValidationError) as info:
        parse_values(text, field="guidance")
    assert info.value.fields == ["guidance"]


@settings(max_examples=300, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 7), st.integers(0, 3))
def test_ranges_include_their_end_both_ways_and_never_overshoot(a, b, step_tenths, decimals):
    scale = 10 ** decimals
    lo, hi, step = a / scale, b / scale, step_tenths / 10
    values = parse_values(f"{lo}-{hi} (+{step})")
    assert values[0] == lo
    direction = 1 if hi >= lo else -1
    assert all((y - x) * direction > 0 for x, y in zip(values, values[1:]))
    assert min(lo, hi) - 1e-9 <= min(values) and max(values) <= max(lo, hi) + 1e-9  # no overshoot
    span_steps = abs(hi - lo) / step
    if abs(span_steps - round(span_steps)) < 1e-9:
        assert values[-1] == hi  # the end is reached exactly when the steps land on it


@settings(max_examples=200, deadline=None)
@given(st.floats(-100, 100), st.floats(-100, 100), st.integers(1, 50))
def test_evenly_spaced_points(a, b, count):
    assume(a != b or count == 1)
    values = parse_values(f"{a!r}-{b!r} [{count}]")
    assert len(values) == count
    assert math.isclose(values[0], a, rel_tol=1e-9, abs_tol=1e-9)
    if count > 1:
        assert math.isclose(values[-1], b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["steps", "guidance", "seed", "num_images", "size", "prompt", "format", "safety", "lora", "lora_scale"]),
       st.text(max_size=30))
def test_axis_values_give_a_list_or_an_error_naming_the_axis(name, text):
    try:
        values = parse_axis_values(name, text)
    except FluxValidationError as exc:
        assert exc.fields == [name] or set(exc.fields) <= {name, top_field(name)}, exc.fields
        return
    assert isinstance(values, list)
