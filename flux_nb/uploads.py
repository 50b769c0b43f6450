"""LoRA files on this machine, uploaded with fal's storage protocol so the server can read them.

A request naming a local file is rewritten to the uploaded file's URL before it is sent. Each file
content is uploaded once per client, however many sweep cells name it at the same moment; a path
that looks like a local file but does not exist is an input error, not something to send as-is.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import time
from collections.abc import Mapping
from pathlib import Path

from .errors import FieldError, FluxProtocolError, FluxValidationError
from .params import FluxRequest, LoraWeight
from .session import ApiSession

__all__ = ["Uploader", "is_local_file", "looks_like_local_path"]

_LORA_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def looks_like_local_path(path: str) -> bool:
    """A path meant as a file on this machine (not a URL or a Hugging Face repo id)."""
    if "://" in path:
        return False
    return path.startswith(("/", "./", "../", "~", "\\\\")) or path.lower().endswith(_LORA_SUFFIXES)


def is_local_file(path: str) -> bool:
    if "://" in path:
        return False
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError):
        return False


class Uploader:
    """Uploads local files through one client's session, once per file content."""

    def __init__(self, session: ApiSession):
        self.session = session
        self._uploads: dict[str, asyncio.Future[str]] = {}  # sha256 -> its upload (done or in flight)
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256

    async def prepare(self, request: FluxRequest) -> FluxRequest:
        """``request`` with every LoRA that names a local file replaced by its uploaded URL."""
        if not request.loras:
            return request
        loras, errors = [], []
        for i, lora in enumerate(request.loras):
            if is_local_file(lora.path):
                loras.append(LoraWeight(await self.upload(lora.path), lora.scale))
            elif looks_like_local_path(lora.path):
                errors.append(FieldError(f"loras.{i}.path", lora.path, "no such file (give a URL, a repo id or an existing file)"))
            else:
                loras.append(lora)
        if errors:
            raise FluxValidationError(errors)
        return request.replace(loras=loras)

    async def upload(self, path: str | Path) -> str:
        """Upload a file; returns its URL. Callers asking for the same content share one upload."""
        file = Path(path).expanduser()
        try:
            digest = await asyncio.to_thread(self._digest, file)
        except OSError as exc:
            raise FluxValidationError([FieldError("path", str(path), f"cannot be read ({exc.strerror or exc})")]) from None
        pending = self._uploads.get(digest)
        if pending is None:
            pending = self._uploads[digest] = asyncio.ensure_future(self._upload(file))
        try:
            return await asyncio.shield(pending)
        except BaseException:
            if pending.done() and (pending.cancelled() or pending.exception() is not None):
                self._uploads.pop(digest, None)  # let a later call try again
            raise

    def _digest(self, file: Path) -> str:
        # Hash once per (path, size, mtime): a sweep names the same LoRA in every cell.
        info = file.stat()
        key = (str(file.resolve()), info.st_size, info.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            sha = hashlib.sha256()
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
            digest = self._digests[key] = sha.hexdigest()
        return digest

    async def _upload(self, file: Path) -> str:
        session = self.session
        data = await asyncio.to_thread(file.read_bytes)
        # Big LoRAs on slow links: allow about 256 KiB/s per try on top of the usual limit.
        per_try = session.request_timeout + len(data) / (256 * 1024)
        deadline = time.monotonic() + per_try * 3
        token_url = f"{session.backend.storage_url}/storage/auth/token?storage_type=fal-cdn-v3"
        answer = await session.send("POST", token_url, kind="upload", json_body={}, deadline=deadline)
        grant = answer.json("storage token answer")
        if not isinstance(grant, Mapping) or not all(isinstance(grant.get(k), str) for k in ("token", "token_type", "base_url")):
            raise FluxProtocolError("the storage token answer lacks token, token_type or base_url")
        upload = await session.send(
            "POST",
            f"{grant['base_url'].rstrip('/')}/files/upload",
            kind="upload",
            content=data,
            headers={
                "Authorization": f"{grant['token_type']} {grant['token']}",
                "Content-Type": mimetypes.guess_type(file.name)[0] or "application/octet-stream",
                "X-Fal-File-Name": file.name,
            },
            deadline=deadline,
            attempt_timeout=per_try,
        )
        body = upload.json("upload answer")
        url = body.get("access_url") if isinstance(body, Mapping) else None
        if not isinstance(url, str):
            raise FluxProtocolError("the upload answer has no access_url")
        return url
