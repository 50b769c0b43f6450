"""Upload endpoints: fal's storage protocol, as ``fal_client`` speaks it.

``POST /files/upload`` takes the raw bytes of one file (name in ``X-Fal-File-Name``) and answers
``{access_url, file_size, content_type}``.

Files over 100 MB come in parts (checked against fal_client's ``MultipartUpload``)::

    POST /files/upload/multipart                  X-Fal-File-Name -> {access_url, uploadId}
    PUT  {access_url}/multipart/{uploadId}/{n}    part n (1..10000) -> ETag header
    POST {access_url}/multipart/{uploadId}/complete
         {"parts": [{"partNumber": n, "etag": ...}, ...]} -> {access_url, file_size}

The parts are joined in part-number order. ``access_url`` has no query (fal_client appends to
it), so it carries its signature in its folder's name (:func:`protocol.upload_folder`): like every
file URL this server hands out, it can be fetched without the token. Sending a part again
replaces it; completing twice answers the same; an upload left alone for an hour is dropped.

Bodies (up to ``max_upload``, 2 GiB by default) are streamed to a temporary file and hashed in a
worker thread, in batches, so that a slow disk never stalls the event loop and with it every
other request and status stream.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import protocol as P
from .multipart import MAX_PART_NUMBER, TooManyUploads
from .storage import safe_file_name

__all__ = ["receive_to_file", "upload", "multipart_start", "multipart_part", "multipart_complete"]

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


# -- multipart ------------------------------------------------------------------------------------


def _access_url(state: Any, request: Request, relpath: str) -> str:
    return state.base_url(request) + "/files/" + quote(relpath)


async def _drop_expired(state: Any) -> None:
    for upload in state.multipart.expire():
        await to_thread.run_sync(state.files.delete_parts, upload.upload_id)


async def multipart_start(request: Request) -> Response:
    """``POST /files/upload/multipart``: open an upload; the body (fal_client sends none) is ignored."""
    state = _state(request)
    await _drop_expired(state)
    folder = P.upload_folder(state.token or "", secrets.token_hex(8))
    relpath = f"uploads/{folder}/{safe_file_name(request.headers.get('x-fal-file-name'))}"
    try:
        upload = state.multipart.start(relpath)
    except TooManyUploads as exc:
        raise HTTPException(429, str(exc)) from None
    return JSONResponse({"access_url": _access_url(state, request, relpath), "uploadId": upload.upload_id})


def _open_upload(request: Request) -> Any:
    params = request.path_params
    upload = _state(request).multipart.get(params["upload_id"], f"uploads/{params['folder']}/{params['name']}")
    if upload is None:
        raise HTTPException(404, "no such multipart upload (unknown, finished long ago, or abandoned)")
    return upload


async def multipart_part(request: Request) -> Response:
    """``PUT {access_url}/multipart/{upload_id}/{part}``: one part; answers its ``ETag``."""
    state = _state(request)
    upload = _open_upload(request)
    text = request.path_params["part"]
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PART_NUMBER):
        raise HTTPException(400, f"part number {text!r}: must be a whole number from 1 to {MAX_PART_NUMBER}")
    number = int(text)
    if upload.done or upload.completing:
        raise HTTPException(409, "this multipart upload is already complete")
    tmp_path, digest = await to_thread.run_sync(state.files.new_upload)
    try:
        size = await receive_to_file(request, tmp_path, digest, state.max_upload - upload.size_without(number))
        if upload.done or upload.completing or state.multipart.get(upload.upload_id, upload.relpath) is None:
            raise HTTPException(409, "this multipart upload was completed or dropped while the part was sent")
        await to_thread.run_sync(state.files.store_part, upload.upload_id, number, tmp_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    etag = f'"{digest.hexdigest()[:32]}"'
    upload.parts[number] = (etag, size)
    return JSONResponse({"partNumber": number, "etag": etag, "size": size}, headers={"ETag": etag})


def _listed_parts(body: Any, received: dict[int, tuple[str, int]]) -> list[int]:
    """The part numbers a completion lists, checked against the parts received (400 if wrong)."""
    parts = body.get("parts") if isinstance(body, dict) else None
    if not isinstance(parts, list) or not parts:
        raise HTTPException(400, 'the body must be {"parts": [{"partNumber": n, "etag": "..."}, ...]}')
    numbers = []
    for entry in parts:
        number = entry.get("partNumber") if isinstance(entry, dict) else None
        etag = entry.get("etag") if isinstance(entry, dict) else None
        if type(number) is not int or not isinstance(etag, str):
            raise HTTPException(400, f"part {entry!r}: needs an integer partNumber and a string etag")
        if number not in received:
            raise HTTPException(400, f"part {number} was never received")
        if etag.strip('"') != received[number][0].strip('"'):
            raise HTTPException(400, f"part {number}: etag {etag!r} is not the one this server sent")
        numbers.append(number)
    if len(set(numbers)) != len(numbers):
        raise HTTPException(400, "a part number is listed twice")
    return sorted(numbers)


async def _read_small(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_complete(request: Request) -> Response:
    """``POST {access_url}/multipart/{upload_id}/complete``: join the listed parts into the file."""
    state = _state(request)
    upload = _open_upload(request)
    url = _access_url(state, request, upload.relpath)
    if upload.done:  # a retried completion: same answer
        return JSONResponse({"access_url": url, "file_size": upload.size})
    if upload.completing:
        raise HTTPException(409, "this multipart upload is being completed")
    raw = await _read_small(request, state.max_body)
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPException(400, "the body is not valid JSON") from None
    numbers = _listed_parts(body, upload.parts)
    upload.completing = True
    try:
        size = await to_thread.run_sync(state.files.assemble_parts, upload.upload_id, numbers, upload.relpath)
    finally:
        upload.completing = False
    upload.size = size
    return JSONResponse({"access_url": url, "file_size": size})
