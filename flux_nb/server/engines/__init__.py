"""Engines behind the local server, loaded by name and imported only when asked for.

- ``preview``: deterministic placeholder images drawn with Pillow in milliseconds (no model).
- ``diffusers``: real Flux through 🤗 diffusers on this machine (needs the ``local`` extra).
"""

from __future__ import annotations

from typing import Any

from .base import Engine, EngineInputError, EngineOutput, GeneratedImage, JobCancelled, JobContext

__all__ = [
    "ENGINES",
    "load_engine",
    "Engine",
    "EngineInputError",
    "EngineOutput",
    "GeneratedImage",
    "JobCancelled",
    "JobContext",
]

#: name -> (module, class)
ENGINES: dict[str, tuple[str, str]] = {
    "preview": ("flux_nb.server.engines.preview", "PreviewEngine"),
    "diffusers": ("flux_nb.server.engines.diffusers", "DiffusersEngine"),
}


def load_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name`` with ``options`` (e.g. ``load_engine("diffusers", model=...)``).

    Options that are None are dropped, so command-line defaults fall through to the engine's own.
    """
    import importlib

    try:
        module_name, class_name = ENGINES[name]
    except KeyError:
        raise ValueError(f"engine={name!r}: unknown engine; choose one of {', '.join(ENGINES)}") from None
    module = importlib.import_module(module_name)
    engine_class = getattr(module, class_name)
    return engine_class(**{key: value for key, value in options.items() if value is not None})
