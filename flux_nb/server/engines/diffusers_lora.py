"""LoRA adapters for the diffusers engine: load each distinct file once, switch per request.

A LoRA file is identified by the hash of its bytes, so the same file reached through two paths (an
upload and a local copy) is one adapter. Each is loaded with the pipeline's own LoRA loader as a
named PEFT adapter and kept; a request then only picks adapters and their scales
(``set_adapters``), which never touches the base weights. Adapters a request does not name are
inactive, and a request without LoRAs turns LoRA layers off.

Before loading, every LoRA matrix is checked against the layer it targets. diffusers' Flux loader
would otherwise *widen* a base layer to fit a bigger LoRA (a feature for Flux Control models), which
would break the model for every later request; here such a file is refused with
:class:`~flux_nb.server.engines.base.EngineInputError` naming ``loras.N.path``.

torch, diffusers and safetensors are imported only inside functions that need them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ...params import LoraWeight
from .base import EngineInputError

__all__ = [
    "LoraAdapters",
    "ResolvedLora",
    "adapter_name_for",
    "merge_scales",
    "linear_shapes",
    "lora_shape_problems",
    "file_digest",
]

logger = logging.getLogger(__name__)

#: Pipeline parts a Flux LoRA may target (diffusers' key prefixes).
LORA_COMPONENTS = ("transformer", "text_encoder")


@dataclass(frozen=True)
class ResolvedLora:
    """A request's LoRA after its file was found: where it was asked for, and which adapter it is."""

    index: int
    path: str  # as the request gave it
    file: Path
    digest: str
    scale: float

    @property
    def field(self) -> str:
        return f"loras.{self.index}.path"

    @property
    def adapter_name(self) -> str:
        return adapter_name_for(self.digest)


def adapter_name_for(digest: str) -> str:
    """The adapter name for a LoRA file's content hash (stable across requests and restarts)."""
    return f"lora_{digest[:16]}"


def merge_scales(loras: Iterable[ResolvedLora]) -> tuple[list[str], list[float]]:
    """Adapter names and weights for ``set_adapters``, in request order.

    The same file named twice is one adapter whose scale is the sum: two copies of the same low-rank
    update at scales a and b add up to one at a + b.
    """
    merged: dict[str, float] = {}
    for lora in loras:
        merged[lora.adapter_name] = merged.get(lora.adapter_name, 0.0) + lora.scale
    return list(merged), list(merged.values())


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def linear_shapes(component: str, model: Any) -> dict[str, tuple[int, int]]:
    """``{"<component>.<module>": (out_features, in_features)}`` for every linear layer of a model.

    PEFT-wrapped layers (after an earlier LoRA load) are reported under their original names, and
    the LoRA matrices themselves are left out, so the map is the same before and after loading.
    """
    import torch

    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if any(p in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for p in parts):
            continue
        if parts and parts[-1] == "base_layer":
            parts = parts[:-1]
        shapes[".".join([component, *parts])] = (module.out_features, module.in_features)
    return shapes


def lora_shape_problems(state_dict: Mapping[str, Any], shapes: Mapping[str, tuple[int, int]]) -> list[str]:
    """What stops a (diffusers-format) LoRA state dict from fitting the model; empty when it fits.

    ``state_dict`` keys look like ``transformer.<module>.lora_A.weight``; ``shapes`` is
    :func:`linear_shapes` over the pipeline's LoRA-capable parts.
    """
    problems: list[str] = []
    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module, _, rest = key.partition(marker)
                if rest == "weight":
                    modules.setdefault(module, {})[part] = tensor
                break
        else:
            if "lora" not in key:
                problems.append(f"{key}: not a LoRA weight (Flux Control and full fine-tunes are not supported)")
    if not modules and not problems:
        return ["the file contains no LoRA weights for this model"]
    for module, pair in sorted(modules.items()):
        short = module
        if "lora_A" not in pair or "lora_B" not in pair:
            problems.append(f"{short}: has only {', '.join(pair)} (needs both lora_A and lora_B)")
            continue
        a, b = pair["lora_A"], pair["lora_B"]
        if module not in shapes:
            problems.append(f"{short}: this model has no such layer")
            continue
        out_features, in_features = shapes[module]
        if len(a.shape) != 2 or len(b.shape) != 2:
            problems.append(f"{short}: expected 2-d LoRA matrices, got {tuple(a.shape)} and {tuple(b.shape)}")
        elif a.shape[0] != b.shape[1]:
            problems.append(f"{short}: lora_A rank {a.shape[0]} differs from lora_B rank {b.shape[1]}")
        elif a.shape[1] != in_features or b.shape[0] != out_features:
            problems.append(
                f"{short}: LoRA maps {a.shape[1]} -> {b.shape[0]} features, the model's layer {in_features} -> {out_features}"
            )
    return problems


class LoraAdapters:
    """The LoRA adapters loaded into one pipeline, and which of them a request uses.

    ``max_loaded`` bounds how many are kept; the least recently used one not needed by the current
    request is deleted first. Not thread-safe: the engine runs one job at a time.
    """

    def __init__(self, pipe: Any, *, max_loaded: int = 8):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded!r}")
        self.pipe = pipe
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, str] = OrderedDict()  # digest -> adapter name, oldest first
        self._digests: dict[tuple[str, int, int], str] = {}  # (file, size, mtime_ns) -> digest
        self._lora_active = False

    @property
    def loaded(self) -> list[str]:
        """Names of the adapters now in the pipeline, least recently used first."""
        return list(self._loaded.values())

    def resolve(self, loras: Sequence[LoraWeight], resolve_file: Callable[[str], Path]) -> list[ResolvedLora]:
        """Find each LoRA's file and hash it; a path that cannot be found is refused by field."""
        out = []
        for index, lora in enumerate(loras):
            field = f"loras.{index}.path"
            try:
                file = Path(resolve_file(lora.path))
                stat = file.stat()
            except EngineInputError as exc:
                if exc.field.startswith(f"loras.{index}"):
                    raise
                raise EngineInputError(field, lora.path, exc.message) from exc
            except (OSError, ValueError) as exc:
                raise EngineInputError(field, lora.path, f"cannot open the LoRA file: {exc}") from exc
            key = (str(file), stat.st_size, stat.st_mtime_ns)
            digest = self._digests.get(key)
            if digest is None:
                digest = self._digests[key] = file_digest(file)
            out.append(ResolvedLora(index, lora.path, file, digest, lora.scale))
        return out

    def activate(self, loras: Sequence[ResolvedLora], log: Callable[[str], None] = lambda _: None) -> None:
        """Load what is new, then make exactly these adapters active at these scales."""
        for lora in loras:
            if lora.digest in self._loaded:
                self._loaded.move_to_end(lora.digest)
            else:
                log(f"loading LoRA {lora.path}")
                self._load(lora)
        self._evict(keep={lora.digest for lora in loras})
        if loras:
            names, weights = merge_scales(loras)
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
            self._lora_active = True
        elif self._lora_active:
            self.pipe.disable_lora()
            self._lora_active = False

    def _load(self, lora: ResolvedLora) -> None:
        from diffusers.utils import USE_PEFT_BACKEND

        if not USE_PEFT_BACKEND:
            # A server set-up problem, not the request's: a plain error (HTTP 500), not a 422.
            raise RuntimeError("LoRAs need the peft package on the server: pip install 'flux-nb[local]'")
        name = lora.adapter_name
        raw = _read_safetensors(lora)
        try:
            converted, _alphas = self.pipe.lora_state_dict(dict(raw), return_alphas=True)
        except Exception as exc:  # any failure to read the format is the file's fault
            raise EngineInputError(lora.field, lora.path, f"not a Flux LoRA diffusers can read ({type(exc).__name__}: {exc})") from exc
        shapes: dict[str, tuple[int, int]] = {}
        for component in LORA_COMPONENTS:
            model = getattr(self.pipe, component, None)
            if model is not None:
                shapes.update(linear_shapes(component, model))
        problems = lora_shape_problems(converted, shapes)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise EngineInputError(
                lora.field,
                lora.path,
                "LoRA does not fit this model (made for another base model?): " + "; ".join(problems[:3]) + more,
            )
        try:
            self.pipe.load_lora_weights(dict(raw), adapter_name=name)
        except Exception as exc:
            self._forget(name)
            raise EngineInputError(lora.field, lora.path, f"could not load the LoRA ({type(exc).__name__}: {exc})") from exc
        self._loaded[lora.digest] = name
        logger.info("loaded LoRA %s as adapter %s", lora.path, name)

    def _forget(self, name: str) -> None:
        """Remove a possibly half-loaded adapter so the pipeline stays as it was."""
        try:
            self.pipe.delete_adapters(name)
        except Exception:  # nothing was injected, or only part of it: either way it is gone now
            logger.debug("no adapter %s to delete", name, exc_info=True)

    def _evict(self, keep: set[str]) -> None:
        for digest in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if digest not in keep:
                name = self._loaded.pop(digest)
                self.pipe.delete_adapters(name)
                logger.info("unloaded LoRA adapter %s (keeping at most %d)", name, self.max_loaded)


def _read_safetensors(lora: ResolvedLora) -> dict[str, Any]:
    # safetensors only: a pickled .bin/.pt file could run code when loaded.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(lora.file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineInputError(lora.field, lora.path, f"not a readable .safetensors LoRA file ({exc})") from exc
