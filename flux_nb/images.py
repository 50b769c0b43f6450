"""Fetching a result's images: every one at once, checked, from the right place only.

fal's image URLs expire, so images are downloaded as soon as the result arrives and handed back as
bytes. Each is checked to be a whole image of sane size (a truncated file or a decompression bomb is
a protocol error), URL schemes other than http(s) and data URIs are refused, and a redirect may not
lead to another host.
"""

from __future__ import annotations

import asyncio
import io
from urllib.parse import urljoin, urlsplit

from .errors import FluxProtocolError
from .protocol import Output, decode_data_uri
from .result import FluxImage
from .session import ApiSession

__all__ = ["MAX_IMAGE_PIXELS", "download_images", "inspect_image"]

#: Largest image flux-nb decodes (pixels).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024

_REDIRECTS = (301, 302, 303, 307, 308)


def inspect_image(data: bytes, claimed_type: str | None) -> tuple[int, int, str]:
    """Check that ``data`` is a whole, sane image; return (width, height, content type)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise FluxProtocolError(f"the server sent a {width}x{height} image, larger than flux-nb accepts")
            fmt = (image.format or "").upper()
            image.load()  # a truncated file fails here
    except FluxProtocolError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FluxProtocolError(f"an image from the server is not a valid image ({type(exc).__name__})") from None
    ctype = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}.get(fmt, claimed_type or "image/jpeg")
    return width, height, ctype


async def download_images(session: ApiSession, output: Output, request_id: str, deadline: float) -> list[FluxImage]:
    """Every image of ``output``, fetched concurrently and checked (decoding off the event loop)."""
    tasks = [asyncio.ensure_future(_fetch(session, ref.url, request_id, deadline)) for ref in output.images]
    try:
        payloads = await asyncio.gather(*tasks)
    except BaseException:
        # One failed (or we were cancelled): stop the others instead of letting them read on.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    images = []
    for i, (ref, (data, ctype)) in enumerate(zip(output.images, payloads)):
        width, height, ctype = await asyncio.to_thread(inspect_image, data, ctype or ref.content_type)
        images.append(
            FluxImage(
                data=data,
                content_type=ctype,
                width=width,
                height=height,
                url=None if ref.url.startswith("data:") else ref.url,
                file_name=ref.file_name,
                nsfw=output.has_nsfw_concepts[i] if i < len(output.has_nsfw_concepts) else False,
            )
        )
    return images


async def _fetch(session: ApiSession, url: str, request_id: str, deadline: float) -> tuple[bytes, str | None]:
    if url.startswith("data:"):  # sync_mode; its size was bounded when the result was read
        return decode_data_uri(url)
    scheme = urlsplit(url).scheme
    if scheme not in {"http", "https"}:
        raise FluxProtocolError(f"an image URL uses the unsupported scheme {scheme!r}", request_id=request_id)
    if scheme == "http" and session.backend.kind == "fal":
        raise FluxProtocolError("fal.ai sent a plain-http image URL; refusing it", request_id=request_id)
    for _hop in range(4):
        answer = await session.send(
            "GET", url, kind="image", request_id=request_id, deadline=deadline, accept_status=_REDIRECTS
        )
        if answer.status_code < 300:
            return answer.content, answer.headers.get("content-type")
        target = urljoin(url, answer.headers.get("location", ""))
        if urlsplit(target)[:2] != urlsplit(url)[:2]:
            raise FluxProtocolError(
                f"an image URL redirected to another host ({urlsplit(target).netloc or '?'}); refusing it",
                request_id=request_id,
            )
        url = target
    raise FluxProtocolError("an image URL redirected too many times", request_id=request_id)
