"""Planning sweeps: axes, cells, seed policy, dry-run figures, the max_cells cap, pricing."""

from __future__ import annotations

import pytest

from flux_nb import pricing
from flux_nb.errors import FluxValidationError
from flux_nb.params import FluxRequest, ImageSize, LoraWeight
from flux_nb.store import Store
from flux_nb.sweeps import guidance_sweep, parse_axis_values, prompt_sweep, sweep
from flux_nb.sweeps.plan import build_plan, expand_prompt, fill_template


def test_cells_are_the_product_in_keyword_order():
    plan = build_plan("a fox", {"guidance": "2-4", "steps": [10, 20], "seed": 5})
    assert [a.name for a in plan.axes] == ["guidance_scale", "num_inference_steps"]
    assert len(plan.requests) == 6
    # product order: the last axis varies fastest
    assert [(r.guidance_scale, r.num_inference_steps) for r in plan.requests] == [
        (2.0, 10), (2.0, 20), (3.0, 10), (3.0, 20), (4.0, 10), (4.0, 20)
    ]
    assert plan.values[1] == {"guidance_scale": 2.0, "num_inference_steps": 20}
    assert plan.coords[1] == (0, 1)
    assert all(r.prompt == "a fox" and r.seed == 5 for r in plan.requests)


def test_fixed_fields_and_aliases():
    plan = build_plan("a fox", {"size": "square", "n": 2, "format": "png", "cfg": [1, 2]})
    assert [a.name for a in plan.axes] == ["guidance_scale"]
    r = plan.requests[0]
    assert (r.image_size, r.num_images, r.output_format) == ("square", 2, "png")


def test_image_size_tuple_is_one_size_and_list_is_an_axis():
    plan = build_plan("x", {"image_size": (640, 480)})
    assert plan.axes == [] and plan.requests[0].image_size == ImageSize(640, 480)
    plan = build_plan("x", {"image_size": ["square", (640, 480), "1280x720"]})
    assert plan.axes[0].labels == ["square", "640x480", "1280x720"]
    assert [r.size for r in plan.requests] == [(512, 512), (640, 480), (1280, 720)]


def test_prompt_variants_become_the_first_axis():
    plan = build_plan("a {red|blue} car", {"seed": 1, "steps": [4, 8]})
    assert [a.name for a in plan.axes] == ["prompt", "num_inference_steps"]
    assert plan.axes[0].values == ("a red car", "a blue car")
    assert [r.prompt for r in plan.requests] == ["a red car", "a red car", "a blue car", "a blue car"]


def test_prompt_list_is_an_axis():
    plan = build_plan(["a cat", "a dog"], {"seed": 1})
    assert plan.axes[0].name == "prompt" and len(plan.requests) == 2


def test_expand_prompt_leaves_wildcards_and_protected_slots():
    assert expand_prompt("a __animal__ {in|on} {place}", protect=["place"]) == [
        "a __animal__ in {place}", "a __animal__ on {place}"
    ]
    assert fill_template("a {animal} {x|y}", {"animal": "fox"}) == "a fox {x|y}"


def test_prompt_sweep_fills_slots(data_dir):
    result = prompt_sweep("a {animal} in {style} style", animal=["cat", "fox"], style="ink", seed=3, dry_run=True)
    assert [a.name for a in result.axes] == ["animal"]
    assert [c.request.prompt for c in result.cells] == ["a cat in ink style", "a fox in ink style"]
    with pytest.raises(FluxValidationError, match="style"):
        prompt_sweep("a {animal} in {style}", animal=["cat"], dry_run=True)


def test_lora_axes():
    plan = build_plan(
        "x",
        {"seed": 1, "loras": ["base.safetensors"], "lora": [None, "a.safetensors", ("b.safetensors", 0.5)],
         "lora_scale_0": [0.5, 1.0]},
    )
    assert [a.name for a in plan.axes] == ["lora", "lora_scale_0"]
    assert plan.axes[0].labels == ["none", "a.safetensors", "b.safetensors @ 0.5"]
    loras = [r.loras for r in plan.requests]
    assert loras[0] == (LoraWeight("base.safetensors", 0.5),)
    assert loras[3] == (LoraWeight("base.safetensors", 1.0), LoraWeight("a.safetensors", 1.0))
    assert loras[5] == (LoraWeight("base.safetensors", 1.0), LoraWeight("b.safetensors", 0.5))
    plan = build_plan("x", {"loras": ["a.st", "b.st"], "lora_scale": "0-1 [3]"})
    assert [tuple(l.scale for l in r.loras) for r in plan.requests] == [(0, 0), (0.5, 0.5), (1, 1)]


def test_lora_scale_without_a_lora_is_refused():
    with pytest.raises(FluxValidationError, match="no LoRA"):
        build_plan("x", {"lora_scale": [0.5, 1]})


def test_magic_style_loras_list_with_none_is_an_on_off_axis():
    plan = build_plan("x", {"loras": [None, "a.safetensors"]})
    assert plan.axes[0].name == "lora" and plan.requests[0].loras == ()


def test_bad_values_name_the_cell():
    with pytest.raises(FluxValidationError) as info:
        build_plan("x", {"guidance": "30-40 (+5)", "steps": [4]})
    text = str(info.value)
    assert "guidance_scale=40.0" in text and "35" in text and "in the cell" in text
    assert "30" not in [e.value for e in info.value.errors]


def test_unknown_field_suggests():
    with pytest.raises(FluxValidationError, match="did you mean 'steps'"):
        build_plan("x", {"stepz": [1, 2]})
    with pytest.raises(FluxValidationError, match="cannot be swept"):
        build_plan("x", {"sync_mode": [True, False]})


def test_parse_axis_values_for_the_magic():
    assert parse_axis_values("steps", "10-30 [3]") == [10, 20, 30]
    assert parse_axis_values("guidance", "1-2 [3]") == [1.0, 1.5, 2.0]
    assert parse_axis_values("size", "square, landscape_16_9") == ["square", "landscape_16_9"]
    assert parse_axis_values("lora", "none, a.safetensors") == [None, "a.safetensors"]
    assert parse_axis_values("safety", "on,off") == [True, False]


# -- seeds -------------------------------------------------------------------------------------


def test_one_seed_for_every_cell_when_given():
    plan = build_plan("x", {"seed": 42, "guidance": [1, 2, 3]})
    assert {r.seed for r in plan.requests} == {42} and plan.seed_source == "given"


def test_seed_axis():
    plan = build_plan("x", {"seed": "1-3"})
    assert [r.seed for r in plan.requests] == [1, 2, 3] and plan.seed_source == "axis"


def test_vary_seed_gives_every_image_its_own_seed():
    plan = build_plan("x", {"seed": 100, "n": [1, 2, 3]}, vary_seed=True)
    assert [r.seed for r in plan.requests] == [100, 101, 103]


def test_missing_seed_is_drawn_once_and_remembered(tmp_path):
    store = Store(tmp_path)
    first = build_plan("x", {"guidance": [1, 2]}, store=store)
    assert first.seed_source == "drawn" and len({r.seed for r in first.requests}) == 1
    again = build_plan("x", {"guidance": [1, 2]}, store=store)
    assert again.seed == first.seed and again.seed_source == "remembered"
    other = build_plan("x", {"guidance": [1, 3]}, store=store)
    assert other.seed_source == "drawn"
    fresh = build_plan("x", {"guidance": [1, 2]}, store=store, new_seed=True)
    assert build_plan("x", {"guidance": [1, 2]}, store=store).seed == fresh.seed


# -- dry run, cap, cost ---------------------------------------------------------------------------


def test_dry_run_reports_requests_images_megapixels_and_cost(data_dir):
    result = sweep("a fox", guidance="1-3", n=2, image_size=["square_hd", "1280x1024"], seed=1, dry_run=True)
    summary = result.summary()
    assert result.dry_run and all(c.status == "pending" for c in result.cells)
    assert (summary.cells, summary.requests, summary.images) == (6, 6, 12)
    # square_hd: 1 MP per image; 1280x1024: 1.25 MP -> 2 MP billed
    assert summary.megapixels == 3 * 2 * 1 + 3 * 2 * 2
    assert summary.cost == pytest.approx(18 * pricing.PRICE_PER_MEGAPIXEL)
    assert "est. $0.63" in str(summary)
    bundle = result._repr_mimebundle_()
    assert "dry run" in bundle["text/html"] and "image/jpeg" not in bundle


def test_price_is_configurable(monkeypatch, data_dir):
    monkeypatch.setattr(pricing, "PRICE_PER_MEGAPIXEL", 0.1)
    assert sweep("x", steps=[1, 2], seed=1, dry_run=True).summary().cost == pytest.approx(0.2)


def test_pricing_rounds_each_image_up():
    assert pricing.billed_megapixels(1024, 768) == 1
    assert pricing.billed_megapixels(1024, 1024) == 1
    assert pricing.billed_megapixels(1024, 1025) == 2
    assert pricing.request_megapixels(FluxRequest("x", image_size="square", num_images=4)) == 4
    assert pricing.estimate_cost([FluxRequest("x")] * 3, price_per_megapixel=1.0) == 3.0


def test_max_cells_refuses_with_a_way_out(data_dir):
    with pytest.raises(FluxValidationError) as info:
        sweep("x", steps="1-20", guidance="1-20", seed=1)
    message = str(info.value)
    assert "400 cells" in message and "max_cells=400" in message
    assert info.value.errors[0].field == "max_cells"
    # a dry run still shows the plan (nothing is sent) and a higher cap runs
    assert len(sweep("x", steps="1-20", guidance="1-20", seed=1, dry_run=True)) == 400
    assert len(sweep("x", steps="1-20", guidance="1-20", seed=1, dry_run=True, max_cells=400)) == 400


def test_guidance_sweep_is_sweep_over_guidance(data_dir):
    result = guidance_sweep("a fox", "2-6 [5]", seed=1, dry_run=True)
    assert result.axes[0].name == "guidance_scale"
    assert [c.request.guidance_scale for c in result.cells] == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_flux_nb_sweep_is_the_function_whatever_was_imported_first(data_dir):
    import flux_nb
    import flux_nb.sweeps.grammar  # noqa: F401  (the package is flux_nb.sweeps, so no clash)

    assert len(flux_nb.sweep("x", steps=[1, 2], seed=1, dry_run=True)) == 2


def test_a_dry_run_checks_the_cache_with_one_connection(data_dir, monkeypatch):
    import io

    from PIL import Image

    from flux_nb.result import FluxImage, FluxResult
    from flux_nb.store import get_store

    store = get_store()
    for steps in (1, 7):  # two cells already made by the embedded server (the default client's)
        request = FluxRequest("x", steps=steps, guidance=2, seed=1)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "JPEG")
        image = FluxImage(buffer.getvalue(), "image/jpeg", 8, 8)
        store.save(FluxResult([image], 1, request, backend="embedded"), origin="embedded")
    opened = []  # transactions: Store._connect calls
    real_connect = Store._connect
    monkeypatch.setattr(Store, "_connect", lambda self, **k: opened.append(1) or real_connect(self, **k))
    result = sweep("x", steps="1-50", guidance="0.5-30 (+0.5)", seed=1, dry_run=True)
    assert len(result) == 3000 and len(opened) == 1
    summary = result.summary()
    assert (summary.cached, summary.to_send) == (2, 2998)
    # steps=1 and 7 (rows 0 and 6 of 60 cells) at guidance=2 (the 4th value)
    assert [c.index for c, flag in zip(result.cells, result._cached_flags) if flag] == [3, 6 * 60 + 3]


def test_many_out_of_range_values_make_one_summary_error_per_field():
    with pytest.raises(FluxValidationError) as info:
        build_plan("x", {"guidance": "1-400 [400]", "steps": [0, 10, 60], "seed": 1}, max_cells=None)
    errors = info.value.errors
    summary = [e for e in errors if e.field == "guidance_scale"]
    assert len(summary) == 1 and len(errors) == 3  # steps=0 and steps=60 stay one error each
    (g,) = summary
    assert g.kind == "range" and g.value[:3] == [36.0, 37.0, 38.0] and len(g.value) == 365
    assert g.message == "365 of 400 values out of range 0..35, e.g. 36, 37, 38, ..."
    steps = sorted(e.value for e in errors if e.field == "num_inference_steps")
    assert steps == [0, 60] and all("in the cell" in e.message for e in errors if e.field != "guidance_scale")
    assert len(str(info.value)) < 600
    # a few bad values keep naming their cells
    with pytest.raises(FluxValidationError) as info:
        build_plan("x", {"guidance": "33-38", "seed": 1})
    assert [e.value for e in info.value.errors] == [36.0, 37.0, 38.0]
    assert all("in the cell guidance_scale=3" in e.message for e in info.value.errors)


def test_identical_cells_are_one_request_in_the_dry_run(data_dir):
    result = sweep("x", guidance="1-1 [3]", seed=1, dry_run=True)
    summary = result.summary()
    assert (summary.cells, summary.requests, summary.images) == (3, 1, 1)
    assert summary.cost == pytest.approx(pricing.PRICE_PER_MEGAPIXEL)
    assert "3 cell(s): 1 request(s) (identical cells are sent once)" in str(summary)
    assert "1 request(s)" in result._repr_mimebundle_()["text/html"]
    mixed = sweep("x", guidance=[1, 1, 2], steps=[4, 4], n=2, seed=1, dry_run=True).summary()
    assert (mixed.cells, mixed.requests, mixed.images, mixed.megapixels) == (6, 2, 4, 4)
    # vary_seed gives every cell its own seed: nothing is shared
    assert sweep("x", guidance=[1, 1], seed=1, vary_seed=True, dry_run=True).summary().requests == 2


def test_cache_false_keeps_the_remembered_seed_and_new_seed_changes_it(data_dir):
    first = sweep("a seedless fox", steps=[1, 2], dry_run=True)
    assert first.seed_source == "drawn"
    again = sweep("a seedless fox", steps=[1, 2], cache=False, dry_run=True)
    assert again.seed == first.seed and again.seed_source == "remembered"
    assert sweep("a seedless fox", steps=[1, 2], dry_run=True).seed == first.seed  # still remembered
    renewed = sweep("a seedless fox", steps=[1, 2], new_seed=True, dry_run=True)
    assert renewed.seed != first.seed
    given = sweep("a seedless fox", steps=[1, 2], seed=5, dry_run=True)  # explicit: used, not remembered
    assert given.seed == 5 and given.seed_source == "given"
    assert sweep("a seedless fox", steps=[1, 2], dry_run=True).seed == renewed.seed
    assert prompt_sweep("a {x} fox", x=["seedless"], steps=[1, 2], new_seed=True, dry_run=True).seed != renewed.seed
    with pytest.raises(FluxValidationError) as info:
        sweep("a seedless fox", steps=[1, 2], seed=5, new_seed=True, dry_run=True)
    assert info.value.errors[0].field == "new_seed"
