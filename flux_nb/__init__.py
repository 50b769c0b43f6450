"""flux-nb: text-to-image generation with Flux LoRA (``fal-ai/flux-lora``) from Jupyter.

Importing this package is cheap: heavy parts (the local server, matplotlib, widgets, torch) load
only when first used. The public names below are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # request model and results
    "FluxRequest": "flux_nb.params",
    "ImageSize": "flux_nb.params",
    "LoraWeight": "flux_nb.params",
    "FluxResult": "flux_nb.result",
    "FluxImage": "flux_nb.result",
    # generating
    "generate": "flux_nb.client",
    "agenerate": "flux_nb.client",
    "FluxClient": "flux_nb.client",
    "AsyncFluxClient": "flux_nb.client",
    "get_client": "flux_nb.client",
    "login": "flux_nb.backend",
    "set_session_key": "flux_nb.backend",
    # front ends
    "Panel": "flux_nb.panel",
    "PanelHistoryEntry": "flux_nb.panel",
    # sweeps
    "sweep": "flux_nb.sweeps",
    "asweep": "flux_nb.sweeps",
    "prompt_sweep": "flux_nb.sweeps",
    "guidance_sweep": "flux_nb.sweeps",
    "SweepResult": "flux_nb.sweeps",
    "SweepCell": "flux_nb.sweeps",
    "SweepInterrupted": "flux_nb.sweeps",
    "SweepPage": "flux_nb.sweeps",
    "recover": "flux_nb.recover",
    # saving and history
    "Store": "flux_nb.store",
    "get_store": "flux_nb.store",
    "history": "flux_nb.store",
    "HistoryEntry": "flux_nb.store",
    "read_metadata": "flux_nb.metadata",
    "read_info": "flux_nb.metadata",
    # errors
    "FluxError": "flux_nb.errors",
    "FluxValidationError": "flux_nb.errors",
    "FluxConfigError": "flux_nb.errors",
    "FluxHTTPError": "flux_nb.errors",
    "FluxAuthError": "flux_nb.errors",
    "FluxInputError": "flux_nb.errors",
    "FluxNotFoundError": "flux_nb.errors",
    "FluxRateLimitError": "flux_nb.errors",
    "FluxServerError": "flux_nb.errors",
    "FluxConnectionError": "flux_nb.errors",
    "FluxAmbiguousSubmitError": "flux_nb.errors",
    "FluxTimeoutError": "flux_nb.errors",
    "FluxCancelledError": "flux_nb.errors",
    "FluxJobFailedError": "flux_nb.errors",
    "FluxProtocolError": "flux_nb.errors",
    "FluxStoreError": "flux_nb.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flux_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flux_nb``: register the ``%flux`` / ``%%flux`` magics."""
    from .magic import load_ipython_extension as _load

    _load(ipython)
