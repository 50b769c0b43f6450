"""The request model: fal's defaults, limits, JSON, and errors that name field, value and rule."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from flux_nb.errors import FluxValidationError
from flux_nb.params import IMAGE_SIZE_PRESETS, FluxRequest, ImageSize, LoraWeight


def test_defaults_serialise_to_fal_json():
    assert FluxRequest("a fox").to_dict() == {
        "prompt": "a fox",
        "image_size": "landscape_4_3",
        "num_inference_steps": 28,
        "guidance_scale": 3.5,
        "num_images": 1,
        "loras": [],
        "enable_safety_checker": True,
        "output_format": "jpeg",
        "sync_mode": False,
        "acceleration": "none",
    }


def test_every_field_round_trips_through_fal_json():
    req = FluxRequest(
        "a fox",
        image_size={"width": 1280, "height": 720},
        num_inference_steps=50,
        guidance_scale=0,
        num_images=4,
        seed=7,
        loras=[{"path": "https://x/y.safetensors", "scale": 0.5}],
        enable_safety_checker=False,
        output_format="png",
        sync_mode=True,
        acceleration="regular",
    )
    data = req.to_dict()
    assert data["image_size"] == {"width": 1280, "height": 720}
    assert data["loras"] == [{"path": "https://x/y.safetensors", "scale": 0.5}]
    assert data["seed"] == 7
    assert FluxRequest.from_dict(data) == req


def test_aliases_and_size_forms():
    req = FluxRequest("x", steps=20, guidance=5, size="1280x720", n=2, format="jpg")
    assert (req.num_inference_steps, req.guidance_scale, req.num_images, req.output_format) == (20, 5.0, 2, "jpeg")
    assert req.image_size == ImageSize(1280, 720) and req.size == (1280, 720)
    assert FluxRequest("x", size=(512, 512)).size_label == "512x512"
    for name, size in IMAGE_SIZE_PRESETS.items():
        assert FluxRequest("x", image_size=name).size == size


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_inference_steps", 0),
        ("num_inference_steps", 51),
        ("num_inference_steps", 2.5),
        ("num_inference_steps", True),
        ("guidance_scale", -0.1),
        ("guidance_scale", 35.01),
        ("guidance_scale", math.nan),
        ("guidance_scale", "3"),
        ("num_images", 5),
        ("num_images", 0),
        ("seed", -1),
        ("seed", 2**63),
        ("seed", "7"),
        ("image_size", "huge"),
        ("image_size", {"width": 0, "height": 10}),
        ("image_size", {"width": 14143, "height": 10}),
        ("image_size", {"w": 1}),
        ("image_size", 12),
        ("output_format", "gif"),
        ("acceleration", "turbo"),
        ("enable_safety_checker", "yes"),
        ("sync_mode", 1),
        ("loras", [{"path": "", "scale": 1}]),
        ("loras", [{"path": "a", "scale": 9}]),
        ("loras", [{"scale": 1}]),
        ("loras", [{"path": "a", "weight": 1}]),
        ("loras", 5),
    ],
)
def test_limits_are_enforced_with_field_value_and_rule(field, value):
    with pytest.raises(FluxValidationError) as info:
        FluxRequest("x", **{field: value})
    err = info.value
    assert isinstance(err, ValueError)
    assert err.errors[0].field.startswith(field)
    assert "must" in err.errors[0].message or "unknown" in err.errors[0].message or "required" in err.errors[0].message or "needs" in err.errors[0].message


@pytest.mark.parametrize("field,lo,hi", [("num_inference_steps", 1, 50), ("num_images", 1, 4), ("guidance_scale", 0, 35)])
def test_limits_are_inclusive(field, lo, hi):
    assert getattr(FluxRequest("x", **{field: lo}), field) == lo
    assert getattr(FluxRequest("x", **{field: hi}), field) == hi


def test_several_bad_fields_are_reported_together():
    with pytest.raises(FluxValidationError) as info:
        FluxRequest("", num_images=9, guidance_scale=99)
    assert set(info.value.fields) == {"prompt", "num_images", "guidance_scale"}
    assert "num_images=9" in str(info.value)


def test_unknown_fields_get_a_did_you_mean_hint():
    with pytest.raises(FluxValidationError) as info:
        FluxRequest("x", guidance_scal=3)
    assert "did you mean 'guidance_scale'" in str(info.value)
    with pytest.raises(FluxValidationError) as info:
        FluxRequest.from_dict({"prompt": "x", "steps": 3})
    assert "num_inference_steps" in str(info.value)


def test_from_dict_rejects_non_objects():
    for bad in (None, [], "x", 3):
        with pytest.raises(FluxValidationError):
            FluxRequest.from_dict(bad)


def test_replace_validates_and_cache_key_normalises_size():
    req = FluxRequest("x", seed=1, image_size="square_hd")
    assert req.replace(steps=10).num_inference_steps == 10
    with pytest.raises(FluxValidationError):
        req.replace(steps=0)
    assert req.cache_key() == FluxRequest("x", seed=1, image_size="1024x1024").cache_key()
    assert req.cache_key() == req.replace(sync_mode=True).cache_key()
    assert req.cache_key() != req.replace(seed=2).cache_key()


def test_lora_forms():
    req = FluxRequest("x", loras=["a.safetensors", LoraWeight("b", 0.5), {"path": "c"}])
    assert [(l.path, l.scale) for l in req.loras] == [("a.safetensors", 1.0), ("b", 0.5), ("c", 1.0)]


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(
    ["prompt", "image_size", "num_inference_steps", "guidance_scale", "num_images", "seed", "loras",
     "enable_safety_checker", "output_format", "sync_mode", "acceleration", "bogus"]), _anything, max_size=6))
def test_any_input_either_validates_or_raises_the_documented_error(data):
    try:
        req = FluxRequest.from_dict(data)
    except FluxValidationError as err:
        assert err.errors and all(e.field for e in err.errors)
    else:
        assert FluxRequest.from_dict(req.to_dict()) == req


def test_duplicates_and_unknown_fields_never_raise_type_errors():
    with pytest.raises(FluxValidationError, match="given twice"):
        FluxRequest("x", prompt="y")
    with pytest.raises(FluxValidationError, match="given twice"):
        FluxRequest("x", num_inference_steps=4, steps=3)
    with pytest.raises(FluxValidationError, match="given twice"):
        FluxRequest("x", steps=3, num_inference_steps=4)
    assert FluxRequest(prompt="by keyword").prompt == "by keyword"
    with pytest.raises(FluxValidationError) as info:
        FluxRequest("x", guidence_scale=3)
    assert info.value.errors[0].value == 3 and "guidence_scale=3" in str(info.value)


def test_cache_key_follows_a_local_lora_file_changing(tmp_path):
    import os

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"v1")
    req = FluxRequest("x", seed=1, loras=[str(lora)])
    before = req.cache_key()
    lora.write_bytes(b"v2 longer")
    os.utime(lora, ns=(1, 2))
    assert req.cache_key() != before


def test_error_locations_keep_non_ascii_digit_keys_as_text():
    with pytest.raises(FluxValidationError) as info:
        FluxRequest.from_dict({"prompt": "x", "\u00b2": 1})
    assert info.value.errors[0].to_fal()["loc"] == ["body", "\u00b2"]
