"""Pure helpers of the panel: plain-words messages and the Python call that reproduces a request
(the ``%%flux`` cell comes from :func:`flux_nb.magic_args.cell_template`, shared with ``%flux load``).
A sweep's size and cost come from its dry run's ``summary()``.

Nothing here touches widgets, so it is tested directly and reused by other front ends.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    FieldError,
    FluxAuthError,
    FluxCancelledError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    FluxJobFailedError,
    FluxRateLimitError,
    FluxServerError,
    FluxTimeoutError,
    FluxValidationError,
)
from ..params import FluxRequest

__all__ = [
    "FIELD_LABELS",
    "field_label",
    "describe_error",
    "describe_status",
    "python_code",
]

#: What each request field is called on the panel, so errors name the control the user sees.
FIELD_LABELS: dict[str, str] = {
    "prompt": "Prompt",
    "image_size": "Image size",
    "image_size.width": "Width",
    "image_size.height": "Height",
    "num_inference_steps": "Steps",
    "guidance_scale": "Guidance",
    "num_images": "Images",
    "seed": "Seed",
    "loras": "LoRAs",
    "enable_safety_checker": "Safety checker",
    "output_format": "Format",
}

def field_label(field: str) -> str:
    """The panel's name for a request field (``loras.0.scale`` -> ``LoRA 1 scale``)."""
    if field in FIELD_LABELS:
        return FIELD_LABELS[field]
    parts = field.split(".")
    if parts[0] == "loras" and len(parts) >= 2 and parts[1].isdigit():
        rest = " ".join(parts[2:])
        return f"LoRA {int(parts[1]) + 1}" + (f" {rest}" if rest else "")
    return field


def _describe_field_error(error: FieldError) -> str:
    value = error.value
    shown = "empty" if value is None or value == "" else repr(value)
    return f"{field_label(error.field)} ({shown}) {error.message}"


def describe_error(exc: BaseException) -> str:
    """One line of plain words for an error, naming the field where there is one."""
    if isinstance(exc, FluxValidationError):
        return "Check the settings: " + "; ".join(_describe_field_error(e) for e in exc.errors) + "."
    if isinstance(exc, FluxInputError):
        parts = []
        for entry in exc.errors:
            loc = [str(p) for p in entry.get("loc", []) if p != "body"]
            parts.append(f"{field_label('.'.join(loc)) if loc else 'input'}: {entry.get('msg', '')}")
        return "The server refused the input: " + ("; ".join(parts) if parts else str(exc)) + "."
    if isinstance(exc, FluxCancelledError):
        return "Cancelled."
    if isinstance(exc, FluxAuthError):
        return f"The server refused the key (check FAL_KEY or FLUX_NB_TOKEN): {exc}"
    if isinstance(exc, FluxRateLimitError):
        return f"Too many requests; try again shortly: {exc}"
    if isinstance(exc, FluxConnectionError):
        return f"Could not reach the server: {exc}"
    if isinstance(exc, FluxTimeoutError):
        return f"Timed out: {exc}"
    if isinstance(exc, FluxServerError):
        return f"The server failed: {exc}"
    if isinstance(exc, FluxJobFailedError):
        return f"The model failed: {exc}"
    if isinstance(exc, FluxError):
        return str(exc)
    return f"Unexpected error ({type(exc).__name__}): {exc}"


def describe_status(status: Any) -> str:
    """Live progress from a client ``JobStatus``: queue position, elapsed time, last log line."""
    state = getattr(status, "status", "") or ""
    parts: list[str] = []
    if state == "IN_QUEUE":
        position = getattr(status, "queue_position", None)
        parts.append("waiting in the server's queue" + (f" (position {position})" if position is not None else ""))
    elif state == "IN_PROGRESS":
        parts.append("generating")
    elif state == "COMPLETED":
        parts.append("downloading images")
    elif state:
        parts.append(state.lower())
    elapsed = getattr(status, "elapsed", None)
    if isinstance(elapsed, (int, float)):
        parts.append(f"{elapsed:.1f} s")
    logs = getattr(status, "logs", None) or []
    if logs:
        last = logs[-1]
        message = getattr(last, "message", None) or (last.get("message") if isinstance(last, dict) else None)
        lines = str(message or "").strip().splitlines()
        if lines:
            parts.append(lines[-1][:120])
    return " · ".join(p for p in parts if p)


# -- copy as code ---------------------------------------------------------------------------


def python_code(request: FluxRequest) -> str:
    """The ``flux_nb.generate(...)`` call that reproduces ``request``."""
    from ..metadata import format_number as _num

    args = [repr(request.prompt)]
    size = request.image_size if isinstance(request.image_size, str) else request.image_size.to_dict()
    args.append(f"image_size={size!r}")
    args.append(f"num_inference_steps={request.num_inference_steps}")
    args.append(f"guidance_scale={_num(request.guidance_scale)}")
    args.append(f"num_images={request.num_images}")
    if request.seed is not None:
        args.append(f"seed={request.seed}")
    if request.loras:
        loras = ", ".join(f"{{'path': {lora.path!r}, 'scale': {_num(lora.scale)}}}" for lora in request.loras)
        args.append(f"loras=[{loras}]")
    if not request.enable_safety_checker:
        args.append("enable_safety_checker=False")
    args.append(f"output_format={request.output_format!r}")
    if request.sync_mode:
        args.append("sync_mode=True")
    if request.acceleration != "none":
        args.append(f"acceleration={request.acceleration!r}")
    body = ",\n    ".join(args)
    return f"import flux_nb\n\nresult = flux_nb.generate(\n    {body},\n)\nresult"
