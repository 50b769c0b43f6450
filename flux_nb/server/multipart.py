"""Bookkeeping of multipart uploads (fal_client sends files over 100 MB in parts).

Pure state, no I/O: which uploads are open, which parts each has received (number -> ETag and
size), and which have completed. The handlers in :mod:`flux_nb.server.uploads` do the file work.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["MultipartUpload", "MultipartUploads", "TooManyUploads", "MAX_PART_NUMBER"]

#: Highest part number accepted (S3's limit, which fal's CDN follows).
MAX_PART_NUMBER = 10_000


class TooManyUploads(Exception):
    """More multipart uploads are open than the server keeps at once."""


@dataclass
class MultipartUpload:
    """One multipart upload: where its file will be served, and the parts received so far."""

    upload_id: str
    relpath: str  # uploads/<folder>/<name>, under the server's files
    touched: float
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)  # number -> (etag, size)
    completing: bool = False
    size: int | None = None  # set once completed

    @property
    def done(self) -> bool:
        return self.size is not None

    def size_without(self, part_number: int) -> int:
        """Bytes received in the other parts (a part sent again replaces its earlier copy)."""
        return sum(size for number, (_, size) in self.parts.items() if number != part_number)


class MultipartUploads:
    """The open (and recently completed) multipart uploads of one server.

    At most ``most_open`` are kept; one untouched for ``ttl`` seconds is dropped by :meth:`expire`.
    """

    def __init__(self, *, ttl: float = 3600.0, most_open: int = 64, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.most_open, self.clock = ttl, most_open, clock
        self._uploads: dict[str, MultipartUpload] = {}

    def __len__(self) -> int:
        return len(self._uploads)

    def start(self, relpath: str) -> MultipartUpload:
        """A new upload of the file ``relpath``, with an unguessable id."""
        if len(self._uploads) >= self.most_open:
            raise TooManyUploads(f"{len(self._uploads)} multipart uploads are open; finish or abandon one first")
        upload = MultipartUpload(secrets.token_hex(16), relpath, self.clock())
        self._uploads[upload.upload_id] = upload
        return upload

    def get(self, upload_id: str, relpath: str) -> MultipartUpload | None:
        """The upload with this id, if it is the upload of ``relpath`` (its URL must match too)."""
        upload = self._uploads.get(upload_id)
        if upload is None or upload.relpath != relpath:
            return None
        upload.touched = self.clock()
        return upload

    def expire(self) -> list[MultipartUpload]:
        """Forget uploads untouched for ``ttl`` seconds; returns them (their parts are to delete)."""
        now = self.clock()
        gone = [u for u in self._uploads.values() if now - u.touched > self.ttl and not u.completing]
        for upload in gone:
            del self._uploads[upload.upload_id]
        return gone

    def drop(self) -> list[MultipartUpload]:
        """Forget every upload (at shutdown); returns them."""
        gone = list(self._uploads.values())
        self._uploads.clear()
        return gone
