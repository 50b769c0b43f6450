"""The diffusers engine on a tiny random Flux pipeline built in the test (CPU, no downloads).

Part 1 drives :class:`DiffusersEngine` directly; part 2 serves the same model with
``flux-nb serve --engine diffusers`` in a subprocess and talks to it over loopback HTTP.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from PIL import Image  # noqa: E402
from servers import server_stderr, start_cli_server, stop_process  # noqa: E402
from tiny_flux import build_tiny_flux, save_lora, tiny_lora_state_dict  # noqa: E402

from flux_nb.errors import FluxConfigError  # noqa: E402
from flux_nb.params import FluxRequest  # noqa: E402
from flux_nb.server.engines.base import Engine, EngineInputError, JobCancelled, JobContext  # noqa: E402
from flux_nb.server.engines.diffusers import (  # noqa: E402
    DiffusersEngine,
    ModelLoadError,
    round_to_multiple,
    rounded_size,
)
from flux_nb.server.engines.diffusers_lora import (  # noqa: E402
    ResolvedLora,
    lora_shape_problems,
    merge_scales,
)

pytestmark = pytest.mark.diffusers

SIZE = {"width": 48, "height": 32}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("tiny-flux") / "model")


@pytest.fixture(scope="module")
def engine(model_dir):
    eng = DiffusersEngine(str(model_dir), device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        "good": save_lora(folder / "good.safetensors", tiny_lora_state_dict(seed=1)),
        "other": save_lora(folder / "other.safetensors", tiny_lora_state_dict(seed=2)),
        # Wider input than the tiny model's 32: diffusers alone would widen the base layers to fit.
        "wide": save_lora(folder / "wide.safetensors", tiny_lora_state_dict(in_features=64)),
    }


class Ctx:
    """A JobContext whose cancel flag trips after a given number of steps."""

    def __init__(self, cancel_after_steps: int | None = None):
        self.logs: list[str] = []
        self.cancel_after_steps = cancel_after_steps

    def is_cancelled(self) -> bool:
        steps = sum(1 for line in self.logs if line.startswith("step "))
        return self.cancel_after_steps is not None and steps >= self.cancel_after_steps

    def context(self) -> JobContext:
        def resolve(path: str) -> Path:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            return p

        return JobContext("req-test", self.logs.append, self.is_cancelled, resolve)


def run(engine, seed=7, ctx=None, **fields):
    fields = {"image_size": SIZE, "num_inference_steps": 3, "output_format": "png", **fields}
    return engine.generate(FluxRequest("a red fox in the snow", **fields), seed, (ctx or Ctx()).context())


def pixels(image) -> "np.ndarray":
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB")).astype(np.int16)


def lora(path, scale=1.0):
    return {"path": str(path), "scale": scale}


# -- pure helpers ---------------------------------------------------------------------------------


def test_rounding_to_the_model_multiple():
    assert round_to_multiple(1024, 16) == 1024
    assert round_to_multiple(1000, 16) == 1008  # 62.5 multiples: halves go up
    assert round_to_multiple(1001, 16) == 1008
    assert round_to_multiple(999, 16) == 992
    assert round_to_multiple(3, 16) == 16  # never zero
    assert rounded_size(50, 40, 16) == (48, 48)


def test_merge_scales_sums_a_file_named_twice():
    a = ResolvedLora(0, "a", Path("a"), "aa" * 32, 0.5)
    b = ResolvedLora(1, "b", Path("b"), "bb" * 32, 1.0)
    a2 = ResolvedLora(2, "a-copy", Path("a2"), "aa" * 32, 0.25)
    names, weights = merge_scales([a, b, a2])
    assert names == [a.adapter_name, b.adapter_name]
    assert weights == [0.75, 1.0]


def test_shape_problems_name_the_layer_and_both_shapes():
    state = {
        "transformer.blocks.0.to_q.lora_A.weight": torch.zeros(4, 64),
        "transformer.blocks.0.to_q.lora_B.weight": torch.zeros(32, 4),
        "transformer.nowhere.lora_A.weight": torch.zeros(4, 32),
        "transformer.nowhere.lora_B.weight": torch.zeros(32, 4),
    }
    problems = lora_shape_problems(state, {"transformer.blocks.0.to_q": (32, 32)})
    assert any("blocks.0.to_q" in p and "64" in p and "32 -> 32" in p for p in problems)
    assert any("nowhere" in p and "no such layer" in p for p in problems)
    assert lora_shape_problems({}, {}) == ["the file contains no LoRA weights for this model"]


# -- the engine, directly -------------------------------------------------------------------------


def test_engine_interface(engine):
    assert isinstance(engine, Engine)
    assert engine.name == "diffusers" and engine.max_concurrency == 1
    assert engine.size_multiple == 16
    info = engine.describe()
    assert info["device"] == "cpu" and info["dtype"] == "float32"


def test_images_have_the_rounded_size_and_asked_format(engine):
    ctx = Ctx()
    out = run(engine, ctx=ctx, image_size={"width": 50, "height": 40}, num_images=2)
    assert [(im.width, im.height) for im in out.images] == [(48, 48), (48, 48)]
    for im in out.images:
        assert im.content_type == "image/png"
        assert Image.open(io.BytesIO(im.data)).size == (48, 48)
    assert out.has_nsfw_concepts == [False, False]
    assert out.timings["inference"] > 0
    assert [line for line in ctx.logs if line.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
    assert any("rounded to 48x48" in line for line in ctx.logs)

    jpeg = run(engine, output_format="jpeg").images[0]
    assert jpeg.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    assert (jpeg.width, jpeg.height) == (48, 32)


def test_steps_and_guidance_shape_the_image(engine):
    base = pixels(run(engine).images[0])
    assert np.abs(pixels(run(engine, num_inference_steps=5).images[0]) - base).mean() > 0.5
    assert np.abs(pixels(run(engine, guidance_scale=20.0).images[0]) - base).mean() > 0.5


def test_same_seed_same_image_other_seed_other_image(engine):
    a, b, c = (run(engine, seed=s).images[0] for s in (11, 11, 12))
    assert a.data == b.data
    assert np.abs(pixels(a) - pixels(c)).mean() > 1


def test_a_seed_reproduces_its_image_at_any_batch_position(engine):
    batch = run(engine, seed=20, num_images=3).images
    alone = run(engine, seed=22).images[0]
    # Batched and single runs may round differently in the last bit; allow one grey level.
    assert np.abs(pixels(batch[2]) - pixels(alone)).max() <= 1
    assert np.abs(pixels(batch[0]) - pixels(batch[2])).mean() > 1


def test_lora_changes_the_image_and_its_scale_matters(engine, lora_files, tmp_path):
    transformer = engine.pipe.transformer
    base = run(engine).images[0]
    full = run(engine, loras=[lora(lora_files["good"], 1.0)]).images[0]
    half = run(engine, loras=[lora(lora_files["good"], 0.5)]).images[0]
    zero = run(engine, loras=[lora(lora_files["good"], 0.0)]).images[0]
    other = run(engine, loras=[lora(lora_files["other"], 1.0)]).images[0]
    after = run(engine).images[0]

    assert np.abs(pixels(full) - pixels(base)).mean() > 1
    assert np.abs(pixels(half) - pixels(base)).mean() > 0.3
    assert np.abs(pixels(half) - pixels(full)).mean() > 0.3
    assert np.abs(pixels(other) - pixels(full)).mean() > 1
    assert zero.data == base.data  # scale 0 is exactly no LoRA
    assert after.data == base.data  # adapters not named are off
    # Switching never reloaded the base model, and each file was loaded once.
    assert engine.pipe.transformer is transformer
    copy = shutil.copy(lora_files["good"], tmp_path / "same-bytes.safetensors")
    again = run(engine, loras=[lora(copy, 1.0)]).images[0]
    assert again.data == full.data
    digests = [name for name in engine.loras.loaded]
    assert len(digests) == len(set(digests)) == 2


def test_two_loras_at_once(engine, lora_files):
    one = run(engine, loras=[lora(lora_files["good"])]).images[0]
    both = run(engine, loras=[lora(lora_files["good"]), lora(lora_files["other"])]).images[0]
    same_file_twice = run(engine, loras=[lora(lora_files["good"], 0.5), lora(lora_files["good"], 0.5)]).images[0]
    assert np.abs(pixels(both) - pixels(one)).mean() > 1
    assert np.abs(pixels(same_file_twice) - pixels(one)).max() <= 1


def test_mismatched_lora_is_refused_by_field_and_the_engine_keeps_working(engine, lora_files):
    base = run(engine).images[0]
    shapes = {name: tuple(p.shape) for name, p in engine.pipe.transformer.named_parameters() if "lora" not in name}
    with pytest.raises(EngineInputError) as info:
        run(engine, loras=[lora(lora_files["good"]), lora(lora_files["wide"])])
    err = info.value
    assert err.field == "loras.1.path"
    assert err.value == str(lora_files["wide"])
    assert "64" in err.message and "does not fit" in err.message
    # The base model was not widened to fit the LoRA, and the next job runs as before.
    assert {n: tuple(p.shape) for n, p in engine.pipe.transformer.named_parameters() if "lora" not in n} == shapes
    assert run(engine).images[0].data == base.data


def test_unreadable_or_missing_lora_files_are_input_errors(engine, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(EngineInputError) as info:
        run(engine, loras=[lora(junk)])
    assert info.value.field == "loras.0.path" and "safetensors" in info.value.message

    with pytest.raises(EngineInputError) as info:
        run(engine, loras=[lora(tmp_path / "missing.safetensors")])
    assert info.value.field == "loras.0.path"

    not_lora = save_lora(tmp_path / "plain.safetensors", {"transformer.x_embedder.weight": torch.zeros(32, 16)})
    with pytest.raises(EngineInputError) as info:
        run(engine, loras=[lora(not_lora)])
    assert info.value.field == "loras.0.path"


def test_cancel_stops_at_the_next_step_and_the_pipeline_stays_usable(engine):
    base = run(engine).images[0]
    ctx = Ctx(cancel_after_steps=2)
    with pytest.raises(JobCancelled):
        run(engine, ctx=ctx, num_inference_steps=20)
    steps = [line for line in ctx.logs if line.startswith("step ")]
    assert steps == ["step 1/20", "step 2/20"]
    assert run(engine).images[0].data == base.data


def test_safety_checker_fills_the_flags(engine, caplog):
    calls = []

    def checker(images):
        calls.append([im.size for im in images])
        return [i % 2 == 0 for i in range(len(images))]

    checked = DiffusersEngine.from_pipeline(engine.pipe, safety_checker=checker)
    assert run(checked, num_images=3).has_nsfw_concepts == [True, False, True]
    assert calls == [[(48, 32)] * 3]
    assert run(checked, num_images=2, enable_safety_checker=False).has_nsfw_concepts == [False, False]
    assert len(calls) == 1

    with caplog.at_level(logging.WARNING, logger="flux_nb.server.engines.diffusers"):
        unchecked = DiffusersEngine.from_pipeline(engine.pipe)
    assert sum("no safety checker" in r.getMessage() for r in caplog.records) == 1
    assert run(unchecked, num_images=2).has_nsfw_concepts == [False, False]


def test_load_errors_name_the_model(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        DiffusersEngine(str(missing), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        DiffusersEngine(str(empty), device="cpu")
    with pytest.raises(ModelLoadError, match="flux-nb-test/not-cached"):
        DiffusersEngine("flux-nb-test/not-cached", device="cpu")
    with pytest.raises(FluxConfigError, match="dtype"):
        DiffusersEngine(str(empty), device="cpu", dtype="int8")
    with pytest.raises(FluxConfigError, match="cpu_offload"):
        DiffusersEngine(str(empty), device="cpu", cpu_offload=True)


# -- through the real server ----------------------------------------------------------------------


CACHED_ID = "flux-nb-test/tiny-flux"


def fake_hub_cache(cache: Path, model_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as the Hugging Face cache holds a downloaded model (refs/main -> snapshot)."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return cache


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    """``flux-nb serve --engine diffusers --model ID`` in a subprocess, the model id found in a
    private Hugging Face cache (so loading by cached id is what runs); yields the server's URL."""
    cache = fake_hub_cache(tmp_path_factory.mktemp("hf-cache"), CACHED_ID, model_dir)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    for name in ("FAL_KEY", "FLUX_NB_ENDPOINT", "FLUX_NB_TOKEN"):
        env.pop(name, None)
    # the server prints its URL once the engine has loaded
    proc, url = start_cli_server("--engine", "diffusers", "--model", CACHED_ID, "--device", "cpu", env=env, timeout=120)
    try:
        yield url
    finally:
        stop_process(proc)
    text = server_stderr(proc)
    assert "no safety checker is active" in text  # logged once, at start
    assert text.count("no safety checker is active") == 1


@pytest.fixture
def client(served):
    from flux_nb.client import FluxClient

    c = FluxClient(endpoint=served, store=False)
    yield c
    c.close()


def result_pixels(image) -> "np.ndarray":
    return np.asarray(image.to_pil().convert("RGB")).astype(np.int16)


def test_server_makes_images_of_the_asked_size(client, engine):
    fields = dict(image_size={"width": 50, "height": 40}, num_inference_steps=3, num_images=2, seed=5, output_format="png")
    result = client.generate("a red fox in the snow", **fields)
    assert [(im.width, im.height) for im in result.images] == [(48, 48), (48, 48)]
    assert [im.to_pil().size for im in result.images] == [(48, 48), (48, 48)]
    assert result.seed == 5 and result.has_nsfw_concepts == [False, False]
    # The served model is the one on disk: the same request in-process gives the same pixels.
    local = engine.generate(FluxRequest("a red fox in the snow", **fields), 5, Ctx().context())
    for served_image, local_image in zip(result.images, local.images):
        assert np.abs(result_pixels(served_image) - pixels(local_image)).max() <= 1


def test_server_uses_an_uploaded_lora(client, lora_files):
    fields = dict(image_size=SIZE, num_inference_steps=3, seed=9, output_format="png")
    base = client.generate("a red fox", **fields).images[0]
    with_lora = client.generate("a red fox", loras=[lora(lora_files["good"])], **fields).images[0]
    assert client.aio.counters.get("upload", 0) >= 1  # the local file went through the storage endpoint
    assert np.abs(result_pixels(with_lora) - result_pixels(base)).mean() > 1
    zero = client.generate("a red fox", loras=[lora(lora_files["good"], 0.0)], **fields).images[0]
    assert np.abs(result_pixels(zero) - result_pixels(base)).max() == 0


def test_server_answers_422_for_a_lora_that_does_not_fit(client, lora_files):
    from flux_nb.errors import FluxInputError

    with pytest.raises(FluxInputError) as info:
        client.generate("a red fox", image_size=SIZE, num_inference_steps=2, seed=1, loras=[lora(lora_files["wide"])])
    # fal's loc lists the index as a number; accept its text form too.
    assert any([str(p) for p in e.get("loc", [])[1:]] == ["loras", "0", "path"] for e in info.value.errors), info.value.errors
    # The server still works afterwards.
    assert client.generate("a red fox", image_size=SIZE, num_inference_steps=2, seed=1).images


def test_server_cancel_stops_a_running_job(client):
    from flux_nb.errors import FluxCancelledError

    request = FluxRequest("a red fox", image_size="square_hd", num_inference_steps=50, seed=3)
    handle = client.submit(request)
    deadline = time.monotonic() + 60
    for status in client.iter_status(handle):
        if any(entry.message.startswith("step ") for entry in status.logs or []):
            break
        assert status.status != "COMPLETED" and time.monotonic() < deadline
    assert client.cancel(handle) == "CANCELLATION_REQUESTED"
    with pytest.raises(FluxCancelledError):
        client.fetch(handle, request, timeout=60)  # waits for the job to end
    final = client.status(handle)
    steps = [e.message for e in final.logs or [] if e.message.startswith("step ")]
    assert 0 < len(steps) < 50
