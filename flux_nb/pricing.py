"""What a generation costs on fal.ai: a documented, configurable price per megapixel.

fal bills ``fal-ai/flux-lora`` per megapixel of output. The figures here come from third-party
listings (2026) and are an *estimate*, never a quote:

- :data:`PRICE_PER_MEGAPIXEL` = **$0.035** per megapixel;
- each image is rounded **up** to whole megapixels;
- one megapixel is ``1024 * 1024`` pixels (:data:`MEGAPIXEL`), so a 1024x768 image and a
  1024x1024 image each count as 1 MP, and a 1280x1024 image as 2 MP.

Change the price for the whole process with ``flux_nb.pricing.PRICE_PER_MEGAPIXEL = 0.04``, or pass
``price_per_megapixel=`` to the functions below. The local server costs nothing, but sweeps report
the fal price anyway so a plan can be judged before it is sent to fal.ai. Failed requests are not
billed by fal; the estimate counts every planned request.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from .params import FluxRequest

__all__ = [
    "MEGAPIXEL",
    "PRICE_PER_MEGAPIXEL",
    "billed_megapixels",
    "request_megapixels",
    "estimate_cost",
]

#: Pixels in one billed megapixel.
MEGAPIXEL = 1024 * 1024

#: US dollars per billed megapixel of output (estimate; set it to your own price).
PRICE_PER_MEGAPIXEL = 0.035


def billed_megapixels(width: int, height: int) -> int:
    """Whole megapixels billed for one ``width`` x ``height`` image (rounded up, at least 1)."""
    return max(1, math.ceil(width * height / MEGAPIXEL))


def request_megapixels(request: "FluxRequest") -> int:
    """Megapixels billed for one request: its image size times ``num_images``."""
    return billed_megapixels(request.width, request.height) * request.num_images


def estimate_cost(
    requests: Iterable["FluxRequest"], price_per_megapixel: float | None = None
) -> float:
    """Estimated US dollars for sending every request once.

    ``price_per_megapixel`` defaults to :data:`PRICE_PER_MEGAPIXEL` as it is when called.
    """
    price = PRICE_PER_MEGAPIXEL if price_per_megapixel is None else price_per_megapixel
    return sum(request_megapixels(r) for r in requests) * price
