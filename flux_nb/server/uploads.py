"""Upload endpoints: fal's storage protocol, as ``fal_client`` speaks it.

``POST /files/upload`` takes the raw bytes of one file (name in ``X-Fal-File-Name``) and answers
``{access_url, file_size, content_type}``.

Bodies (up to ``max_upload``, 2 GiB by default) are streamed to a temporary file and hashed in a
worker thread, in batches, so that a slow disk never stalls the event loop and with it every
other request and status stream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import protocol as P

__all__ = ["receive_to_file", "upload"]

#: Bytes gathered from the request before one hop to a worker thread writes and hashes them.
WRITE_BATCH = 1024 * 1024


def write_and_hash(out: BinaryIO, digest: "hashlib._Hash", data: bytes) -> None:
    """Runs in a worker thread (hashlib releases the GIL on big buffers)."""
    digest.update(data)
    out.write(data)


def check_length(request: Request, limit: int) -> None:
    """413 at once when the announced length is already over ``limit``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"upload of {length} bytes is over this server's limit of {limit} bytes")


async def receive_to_file(request: Request, path: Path, digest: "hashlib._Hash", limit: int) -> int:
    """Stream the request body into ``path``, hashing it into ``digest``; returns its size.

    Every write happens in a worker thread. More than ``limit`` bytes is a 413 (the file is left
    for the caller to remove).
    """
    check_length(request, limit)
    out = await to_thread.run_sync(open, path, "wb")
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload is over this server's limit of {limit} bytes")
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= WRITE_BATCH:
                await to_thread.run_sync(write_and_hash, out, digest, b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            await to_thread.run_sync(write_and_hash, out, digest, b"".join(pending))
    finally:
        await to_thread.run_sync(out.close)
    return size


def _state(request: Request) -> Any:
    return request.app.state.flux


async def upload(request: Request) -> Response:
    """``POST /files/upload``: one file in one request."""
    state = _state(request)
    check_length(request, state.max_upload)
    tmp_path, digest = await to_thread.run_sync(state.files.new_upload)
    try:
        size = await receive_to_file(request, tmp_path, digest, state.max_upload)
        rel = await to_thread.run_sync(
            state.files.commit_upload, tmp_path, digest.hexdigest(), request.headers.get("x-fal-file-name")
        )
    finally:
        tmp_path.unlink(missing_ok=True)
    url = P.file_url(state.base_url(request), rel, state.token)
    return JSONResponse({"access_url": url, "file_size": size, "content_type": request.headers.get("content-type")})
