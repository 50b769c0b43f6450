"""The ``diffusers`` engine: real Flux on the user's own GPU, behind the fal-compatible server.

``flux-nb serve --engine diffusers --model PATH`` builds one :class:`DiffusersEngine`, which loads a
``FluxPipeline`` once (from a local folder, or a model id already in the Hugging Face cache) and runs
one job at a time; the server's queue holds the rest.

How each request field is honoured:

- ``image_size``: rounded to the model's size multiple (``vae_scale_factor * 2``, 16 for Flux); the
  size actually produced is reported per image.
- ``num_inference_steps``, ``guidance_scale``: passed to the pipeline.
- ``num_images``: one batched pipeline call with one CPU ``torch.Generator`` per image seeded
  ``seed + i``, so a seed reproduces the same image whatever its batch position (and on any device).
- ``loras``: see :mod:`.diffusers_lora` (each file loaded once, scales switched per request).
- ``output_format``: JPEG or PNG bytes.
- ``enable_safety_checker``: runs the configured checker, if any; without one every flag is False
  and the engine logs once that no checker is active.
- ``sync_mode``, ``acceleration``: the server's business / accepted and ignored.

torch and diffusers are imported only here (and in ``diffusers_lora``), never by the core package.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from ...errors import FluxConfigError
from ...params import FluxRequest
from .base import EngineOutput, GeneratedImage, JobCancelled, JobContext
from .diffusers_lora import LoraAdapters

__all__ = [
    "DiffusersEngine",
    "ModelLoadError",
    "SafetyChecker",
    "round_to_multiple",
    "rounded_size",
    "resolve_dtype",
    "default_device",
    "encode_image",
]

logger = logging.getLogger(__name__)

#: A safety checker: PIL images in, one "has NSFW concepts" flag per image out.
SafetyChecker = Callable[[list[Any]], Sequence[bool]]

_DTYPE_NAMES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}

JPEG_QUALITY = 95


class ModelLoadError(FluxConfigError):
    """The Flux pipeline could not be loaded; the message names the model and what to do."""


# -- pure helpers ---------------------------------------------------------------------------------


def round_to_multiple(value: int, multiple: int) -> int:
    """``value`` rounded to the nearest multiple (halves up), never below one multiple."""
    return max(multiple, ((value + multiple // 2) // multiple) * multiple)


def rounded_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """The (width, height) the model will actually produce for a requested size."""
    return round_to_multiple(width, multiple), round_to_multiple(height, multiple)


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from ``None`` (bf16 on CUDA, float32 elsewhere), a name, or a torch dtype."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise FluxConfigError(f"dtype={dtype!r}: must be one of bf16, fp16, fp32 (or a torch.dtype)")
    return getattr(torch, name)


def encode_image(image: Any, output_format: str) -> GeneratedImage:
    """Encode a PIL image as JPEG or PNG bytes."""
    buf = io.BytesIO()
    if output_format == "png":
        image.save(buf, format="PNG", compress_level=4)
        content_type = "image/png"
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
        content_type = "image/jpeg"
    return GeneratedImage(buf.getvalue(), content_type, image.width, image.height)


# -- loading --------------------------------------------------------------------------------------


def _looks_like_path(model: str) -> bool:
    # A Hugging Face id is "name" or "owner/name"; anything else (absolute, ./, ~, deeper) is a path.
    return model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 or (len(model) > 1 and model[1] == ":")


def load_flux_pipeline(model: str | Path, *, dtype: Any, allow_download: bool = False) -> Any:
    """``FluxPipeline.from_pretrained`` with errors that name the model and say what to do."""
    from diffusers import FluxPipeline

    text = str(model)
    folder = Path(text).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ModelLoadError(
                f"model {text!r} is a file; give the folder of a diffusers Flux pipeline "
                "(the one holding model_index.json). Single-file checkpoints are not supported."
            )
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"model folder {text!r} has no model_index.json: not a diffusers pipeline folder "
                "(download one with `hf download black-forest-labs/FLUX.1-dev`, or save one with save_pretrained)"
            )
        source = str(folder)
    elif isinstance(model, Path) or _looks_like_path(text):
        raise ModelLoadError(f"model folder {text!r} does not exist")
    else:
        source = text
    try:
        with warnings.catch_warnings():
            # Newer diffusers renamed torch_dtype to dtype; older ones know only torch_dtype.
            warnings.simplefilter("ignore", FutureWarning)
            return FluxPipeline.from_pretrained(source, torch_dtype=dtype, local_files_only=not allow_download)
    except OSError as exc:
        # diffusers and huggingface_hub report a missing cache entry or file as OSError subclasses.
        hint = (
            f"download it first (`hf download {text}`) or allow downloads"
            if source == text and not allow_download
            else "check that it is a complete Flux pipeline"
        )
        raise ModelLoadError(f"cannot load Flux model {text!r}: {exc}; {hint}") from exc
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
        raise ModelLoadError(f"cannot load Flux model {text!r} as a FluxPipeline ({type(exc).__name__}: {exc})") from exc


# -- the engine -----------------------------------------------------------------------------------


class DiffusersEngine:
    """Flux through 🤗 diffusers: one pipeline, loaded once, running one job at a time.

    Args:
        model: a local diffusers pipeline folder, or a Hugging Face model id already in the local
            cache (e.g. ``"black-forest-labs/FLUX.1-dev"``).
        device: ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``; default: the GPU if there is one.
        dtype: ``"bf16"``, ``"fp16"``, ``"fp32"`` or a torch dtype; default bf16 on CUDA, float32 else.
        cpu_offload: keep parts on the CPU and move each to the GPU while it runs
            (``enable_model_cpu_offload``): slower, for GPUs with less memory than the model needs.
        allow_download: let diffusers fetch a model id that is not in the local cache.
        safety_checker: a callable taking a list of PIL images and returning one bool per image
            (True: NSFW concepts found). None: no checker; every flag is False.
        max_loras: LoRA adapters kept loaded at once (least recently used ones are dropped).

    Raises:
        ModelLoadError: the model could not be loaded (the message names it).
    """

    name = "diffusers"
    max_concurrency = 1

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        cpu_offload: bool = False,
        allow_download: bool = False,
        safety_checker: SafetyChecker | None = None,
        max_loras: int = 8,
    ):
        device = device or default_device()
        torch_dtype = resolve_dtype(dtype, device)
        if cpu_offload and not device.startswith(("cuda", "xpu")):
            raise FluxConfigError(f"cpu_offload needs a GPU device; device is {device!r}")
        pipe = load_flux_pipeline(model, dtype=torch_dtype, allow_download=allow_download)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        self._setup(pipe, model=str(model), device=device, safety_checker=safety_checker, max_loras=max_loras)

    @classmethod
    def from_pipeline(
        cls,
        pipe: Any,
        *,
        model: str = "<in-memory pipeline>",
        safety_checker: SafetyChecker | None = None,
        max_loras: int = 8,
    ) -> "DiffusersEngine":
        """An engine around a ``FluxPipeline`` already built and placed (benchmarks, custom setups)."""
        self = cls.__new__(cls)
        device = str(getattr(pipe, "_execution_device", None) or pipe.device)
        self._setup(pipe, model=model, device=device, safety_checker=safety_checker, max_loras=max_loras)
        return self

    def _setup(self, pipe: Any, *, model: str, device: str, safety_checker: SafetyChecker | None, max_loras: int) -> None:
        self.pipe = pipe
        self.model = model
        self.device = device
        self.dtype = pipe.transformer.dtype
        self.safety_checker = safety_checker
        self.loras = LoraAdapters(pipe, max_loaded=max_loras)
        self._lock = threading.Lock()
        pipe.set_progress_bar_config(disable=True)  # progress goes to the job's logs instead
        if safety_checker is None:
            logger.warning(
                "diffusers engine: no safety checker is active; has_nsfw_concepts will be false for every image"
            )
        logger.info("diffusers engine: loaded %s on %s (%s)", model, device, self.dtype)

    @property
    def size_multiple(self) -> int:
        """Image sides are rounded to this (the VAE's downscale factor times the 2x2 latent packing)."""
        return int(self.pipe.vae_scale_factor) * 2

    def describe(self) -> dict[str, Any]:
        """What runs, for the server's health endpoint and logs."""
        return {
            "engine": self.name,
            "model": self.model,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "size_multiple": self.size_multiple,
            "safety_checker": self.safety_checker is not None,
            "loras_loaded": len(self.loras.loaded),
        }

    # -- Engine protocol --------------------------------------------------------------------------

    def check(self, request: FluxRequest) -> None:
        """Every valid flux-lora request can run here; LoRA files are checked when the job runs."""

    def generate(self, request: FluxRequest, seed: int, ctx: JobContext) -> EngineOutput:
        """Run one request: ``request.num_images`` images, image i from ``seed + i``."""
        import torch

        width, height = rounded_size(request.width, request.height, self.size_multiple)
        steps = request.num_inference_steps
        with self._lock:
            resolved = self.loras.resolve(request.loras, ctx.resolve_file)
            ctx.check_cancelled()
            self.loras.activate(resolved, log=ctx.log)
            ctx.check_cancelled()
            if (width, height) != request.size:
                ctx.log(f"size {request.width}x{request.height} rounded to {width}x{height} (multiple of {self.size_multiple})")
            # CPU generators: the same seed gives the same noise on any device.
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(request.num_images)]

            def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
                ctx.log(f"step {step + 1}/{steps}")
                ctx.check_cancelled()
                return {}

            started = time.perf_counter()
            try:
                out = self.pipe(
                    prompt=request.prompt,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    guidance_scale=request.guidance_scale,
                    num_images_per_prompt=request.num_images,
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=[],
                )
            except JobCancelled:
                self._after_interrupted_run()
                ctx.log("cancelled")
                raise
            except torch.cuda.OutOfMemoryError as exc:
                self._after_interrupted_run()
                raise RuntimeError(
                    f"out of GPU memory making {request.num_images} image(s) at {width}x{height}; "
                    "try fewer images, a smaller size, or serve with CPU offload"
                ) from exc
            inference = time.perf_counter() - started

        images = list(out.images)
        flags = self._nsfw_flags(images, request.enable_safety_checker)
        encoded = [encode_image(img, request.output_format) for img in images]
        return EngineOutput(images=encoded, has_nsfw_concepts=flags, timings={"inference": inference})

    def close(self) -> None:
        """Drop the pipeline and give its memory back."""
        pipe = getattr(self, "pipe", None)
        self.pipe = None
        if pipe is None:
            return
        del pipe
        self.loras = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # torch is gone only at interpreter exit
            pass

    # -- internals --------------------------------------------------------------------------------

    def _nsfw_flags(self, images: list[Any], enabled: bool) -> list[bool]:
        if not enabled or self.safety_checker is None:
            return [False] * len(images)
        flags = [bool(f) for f in self.safety_checker(images)]
        if len(flags) != len(images):
            raise RuntimeError(f"safety checker returned {len(flags)} flags for {len(images)} images")
        return flags

    def _after_interrupted_run(self) -> None:
        # An exception skips the pipeline's own clean-up: put offloaded parts back and free memory.
        try:
            self.pipe.maybe_free_model_hooks()
        except Exception:  # best effort; the next call re-applies hooks anyway
            logger.debug("maybe_free_model_hooks failed after an interrupted run", exc_info=True)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            logger.debug("empty_cache failed", exc_info=True)
