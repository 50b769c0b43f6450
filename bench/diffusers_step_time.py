"""Per-step time of the diffusers engine vs a raw ``FluxPipeline`` call on the same pipeline.

The engine adds work around the pipeline (LoRA bookkeeping, a step callback that logs and checks for
cancel, image encoding); this measures what that costs. Both runs use the same pipeline object,
prompt, size, steps and seeds; each is warmed up once, then timed ``--repeats`` times. Per-step times
come from the gaps between step-end callbacks (the engine's own "step i/N" log lines; a timestamp-only
callback for the raw call), with a CUDA synchronise at each so GPU work is counted where it happens.

Models:
    python bench/diffusers_step_time.py PATH              # a diffusers Flux folder (or cached model id)
    python bench/diffusers_step_time.py --random-full     # FLUX.1-size transformer, random, CUDA bf16
    python bench/diffusers_step_time.py --tiny --size 64 --steps 4   # tiny random model; runs on CPU

``--random-full`` builds the real FLUX.1 transformer shape (19 double + 38 single blocks, hidden
3072) and the real VAE shape with random weights, and text encoders of full width but one layer
(their cost is once per call, not per step). Images are noise; the timing is what matters.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_flux: tiny model and tokenizers built from scratch
sys.path.insert(0, str(REPO / "bench"))

from _common import parser as bench_parser, report  # noqa: E402

from flux_nb.params import FluxRequest  # noqa: E402
from flux_nb.server.engines.base import JobContext  # noqa: E402
from flux_nb.server.engines.diffusers import DiffusersEngine, resolve_dtype  # noqa: E402

PROMPT = "a red fox in the snow, golden hour, 35mm photo"

#: FLUX.1 [dev] transformer config (black-forest-labs/FLUX.1-dev, transformer/config.json).
FLUX1_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

#: FLUX.1 VAE config (vae/config.json).
FLUX1_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def build_random_full(device: str, dtype: Any) -> Any:
    """A FluxPipeline with a full-size random transformer and VAE, built directly on ``device``."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from tiny_flux import tiny_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = tiny_tokenizers()
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        # Build in the target dtype on the device: 12B float32 parameters on the CPU would need 48 GB.
        torch.set_default_dtype(dtype)
        with torch.device(device):
            transformer = FluxTransformer2DModel(**FLUX1_TRANSFORMER)
            vae = AutoencoderKL(**FLUX1_VAE)
            clip = CLIPTextModel(
                CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=768, intermediate_size=3072,
                               num_attention_heads=12, num_hidden_layers=1, projection_dim=768,
                               max_position_embeddings=77, bos_token_id=clip_tok.bos_token_id,
                               eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id)
            )
            t5 = T5EncoderModel(
                T5Config(vocab_size=len(t5_tok), d_model=4096, d_kv=64, d_ff=10240, num_layers=1,
                         num_heads=64, feed_forward_proj="gated-gelu", pad_token_id=t5_tok.pad_token_id,
                         eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id)
            )
    finally:
        torch.set_default_dtype(previous)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok,
        transformer=transformer,
    )
    return pipe  # already on the device, in the dtype


def _sync_fn(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def _step_gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def time_raw(pipe: Any, *, size: int, steps: int, num_images: int, seed: int, sync: Callable[[], None]) -> tuple[float, list[float]]:
    """One raw pipeline call: (total seconds, step-to-step gaps in seconds)."""
    import torch

    stamps: list[float] = []

    def on_step_end(_pipe: Any, _step: int, _t: Any, _kwargs: dict) -> dict:
        sync()
        stamps.append(time.perf_counter())
        return {}

    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
    sync()
    started = time.perf_counter()
    pipe(prompt=PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=3.5,
         num_images_per_prompt=num_images, generator=generators, output_type="pil",
         callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=[])
    sync()
    return time.perf_counter() - started, _step_gaps(stamps)


def time_engine(engine: DiffusersEngine, *, size: int, steps: int, num_images: int, seed: int, sync: Callable[[], None]) -> tuple[float, list[float]]:
    """One engine job, PNG encoding included: (total seconds, step-to-step gaps in seconds)."""
    stamps: list[float] = []

    def log(line: str) -> None:
        if line.startswith("step "):
            sync()
            stamps.append(time.perf_counter())

    ctx = JobContext("bench", log, lambda: False, Path)
    request = FluxRequest(PROMPT, image_size={"width": size, "height": size}, num_inference_steps=steps,
                          num_images=num_images, output_format="png")
    sync()
    started = time.perf_counter()
    engine.generate(request, seed, ctx)
    sync()
    return time.perf_counter() - started, _step_gaps(stamps)


HEADERS = ["mode", "size", "images", "steps", "total s", "step ms (median)", "step ms (mean)", "vs raw"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The timing rows as table cells (per-step difference against the raw call in the last column)."""
    raw = next((r for r in rows if r["mode"] == "raw"), None)
    out = []
    for r in rows:
        ratio = f"{(r['step_median'] / raw['step_median'] - 1) * 100:+.1f}%" if raw and r is not raw else ""
        out.append([r["mode"], f"{r['size']}x{r['size']}", str(r["images"]), str(r["steps"]), f"{r['total']:.3f}",
                    f"{r['step_median'] * 1000:.1f}", f"{r['step_mean'] * 1000:.1f}", ratio])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)  # --quick (tiny sizes, one timed call) and --json PATH
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("model", nargs="?", help="diffusers Flux folder or cached model id")
    source.add_argument("--random-full", action="store_true", help="full-size random FLUX.1 transformer (GPU)")
    source.add_argument("--tiny", action="store_true", help="tiny random model built in a temp folder")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: the GPU if any)")
    parser.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default: bf16 on CUDA, fp32 else)")
    parser.add_argument("--size", type=int, default=1024, help="square image side in pixels (default 1024)")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per call (default 8)")
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode after one warm-up")
    args = parser.parse_args(argv)
    if args.quick:  # a smoke run: smallest image, two steps, one timed call per mode
        args.size, args.steps, args.repeats = min(args.size, 64), min(args.steps, 2), 1

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory(prefix="flux-bench-") as tmp:
        if args.random_full:
            if not device.startswith("cuda"):
                parser.error("--random-full needs a CUDA device (the transformer alone is 24 GB in bf16)")
            pipe = build_random_full(device, dtype)
            engine = DiffusersEngine.from_pipeline(pipe, model="random FLUX.1 (full size)")
        else:
            model = args.model
            if args.tiny:
                from tiny_flux import build_tiny_flux

                model = str(build_tiny_flux(Path(tmp) / "tiny-flux"))
            engine = DiffusersEngine(model, device=device, dtype=dtype)
        size = engine.size_multiple * max(1, round(args.size / engine.size_multiple))
        sync = _sync_fn(device)
        rows = []
        runners = {
            "raw": lambda seed: time_raw(engine.pipe, size=size, steps=args.steps, num_images=args.num_images, seed=seed, sync=sync),
            "engine": lambda seed: time_engine(engine, size=size, steps=args.steps, num_images=args.num_images, seed=seed, sync=sync),
        }
        for mode, runner in runners.items():
            runner(0)  # warm-up: kernels, allocator, caches
            totals, gaps = [], []
            for i in range(args.repeats):
                total, step_gaps = runner(i + 1)
                totals.append(total)
                gaps.extend(step_gaps)
            gaps = gaps or [statistics.median(totals) / args.steps]  # one step: no gaps to measure
            rows.append({"mode": mode, "size": size, "images": args.num_images, "steps": args.steps,
                         "total": statistics.median(totals), "step_median": statistics.median(gaps),
                         "step_mean": statistics.fmean(gaps)})
        info = engine.describe()
        gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
        report(
            "diffusers engine vs raw pipeline, per-step time",
            HEADERS,
            table_rows(rows),
            [f"model: {info['model']}  device: {gpu}  dtype: {info['dtype']}  torch {torch.__version__}"],
            json_out=args.json,
        )
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
