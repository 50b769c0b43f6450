"""The server's own files: generated images and uploaded files (LoRA weights), under one folder.

Paths given by clients are resolved strictly inside that folder; anything else (``..``, absolute
paths, links out, missing files) is "not found", never an error that tells what exists.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath

__all__ = ["FileStore", "safe_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str | None, default: str = "upload.bin") -> str:
    """A client-given file name reduced to a harmless single path component."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._")
    return cleaned[:120] or default


class FileStore:
    """Files the server serves at ``/files/<relpath>``.

    ``root=None`` makes a private temporary folder, removed by :meth:`close`.
    """

    def __init__(self, root: str | Path | None = None):
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="flux-nb-server-") if root is None else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- generated images ---------------------------------------------------------------------

    def save_result(self, request_id: str, file_name: str, data: bytes) -> str:
        """Store one generated image; returns its relative path."""
        rel = f"results/{request_id}/{safe_file_name(file_name)}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def delete_results(self, request_id: str) -> None:
        shutil.rmtree(self.root / "results" / safe_file_name(request_id), ignore_errors=True)

    # -- uploads ------------------------------------------------------------------------------

    def new_upload(self) -> tuple[Path, "hashlib._Hash"]:
        """A temporary file to stream an upload into, and the hash to update along the way."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        os.close(fd)
        return Path(name), hashlib.sha256()

    def commit_upload(self, tmp_path: Path, digest: str, file_name: str | None) -> str:
        """Move a finished upload to its content-addressed place; returns its relative path.

        The same bytes uploaded twice land in the same place (keyed by their hash).
        """
        rel = f"uploads/{digest[:32]}/{safe_file_name(file_name)}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path.replace(path)
        return rel

    # -- multipart uploads (blocking: call them from a worker thread) -------------------------

    def _parts_dir(self, upload_id: str) -> Path:
        return self.root / "tmp" / "multipart" / safe_file_name(upload_id)

    def store_part(self, upload_id: str, part_number: int, tmp_path: Path) -> None:
        """Keep one received part (a finished temporary file) until the upload completes."""
        folder = self._parts_dir(upload_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp_path.replace(folder / str(part_number))

    def assemble_parts(self, upload_id: str, part_numbers: list[int], relpath: str) -> int:
        """Join the parts, in the order given, into the served file ``relpath``; returns its size.

        Once the file is in place the parts are removed, listed or not; after a failure they stay,
        so that completing can be tried again.
        """
        folder = self._parts_dir(upload_id)
        tmp_path, _ = self.new_upload()
        try:
            with open(tmp_path, "wb") as out:
                for number in part_numbers:
                    with open(folder / str(number), "rb") as part:
                        shutil.copyfileobj(part, out, 1024 * 1024)
                size = out.tell()
            path = self.root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path.replace(path)
        finally:
            tmp_path.unlink(missing_ok=True)
        self.delete_parts(upload_id)
        return size

    def delete_parts(self, upload_id: str) -> None:
        shutil.rmtree(self._parts_dir(upload_id), ignore_errors=True)

    # -- downloads ----------------------------------------------------------------------------

    def cached(self, key: str) -> Path | None:
        """A file downloaded before under ``key`` (not served over HTTP)."""
        folder = self.root / "cache" / safe_file_name(key)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        return files[0] if files else None

    def commit_cache(self, tmp_path: Path, key: str, file_name: str | None) -> Path:
        path = self.root / "cache" / safe_file_name(key) / safe_file_name(file_name, "download.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path.replace(path)
        return path

    # -- lookup -------------------------------------------------------------------------------

    def resolve(self, relpath: str) -> Path | None:
        """The file for a client-given relative path, or None if it is not one of ours."""
        if not relpath or "\x00" in relpath or "\\" in relpath:
            return None
        parts = PurePosixPath(relpath).parts
        if not parts or parts[0] not in {"results", "uploads"} or any(p in {"..", "."} or p.startswith("/") for p in parts):
            return None
        try:
            path = (self.root / relpath).resolve()
        except (OSError, ValueError):
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    @staticmethod
    def content_type(path: Path) -> str:
        guessed, _ = mimetypes.guess_type(path.name)
        return guessed or "application/octet-stream"

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
        else:  # a folder of the user's: keep the files, drop unfinished uploads
            shutil.rmtree(self.root / "tmp", ignore_errors=True)
