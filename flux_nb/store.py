"""The local store: every generation on disk, indexed in SQLite, plus a journal of jobs in flight.

Layout under the data folder (:func:`default_data_dir`, ``FLUX_NB_DATA_DIR`` or the platform's user
data folder)::

    flux.sqlite3                 the index (WAL mode: many readers, one writer, across processes)
    images/<yyyy-mm-dd>/<id>-<i>.<ext>   full-size images with their parameters embedded

Three uses:

- **cache**: :meth:`Store.lookup` finds a finished generation of the same request (same
  :meth:`~flux_nb.params.FluxRequest.cache_key`, so only requests with an explicit seed) made by
  the same backend (same :func:`origin_of`: placeholder images of the local preview server are
  never served as fal.ai results) and loads it back from disk, so re-running a cell or a sweep
  costs nothing;
- **history**: :meth:`Store.history` lists and searches past generations, newest first;
- **journal**: the client records each job right after submitting it and clears it once the images
  are saved, so after a crash :func:`flux_nb.recover` fetches what the server already finished
  instead of paying for it twice.

Nothing secret is ever written: requests are fal's JSON input and handles keep only the request id,
its URLs and an endpoint label. :meth:`Store.save` raises :class:`FluxStoreError` when the folder
cannot be written (full disk, read-only folder); the caller keeps its in-memory result. Reads
(:meth:`lookup`, :meth:`pending`, ...) and the journal treat a broken store as empty and warn once,
so a bad data folder never stops a generation.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit

from .errors import FluxStoreError
from .params import APP_ID, FluxRequest
from .result import FluxImage, FluxResult

__all__ = [
    "EMBEDDED_ORIGIN",
    "FluxStoreError",
    "HistoryEntry",
    "PendingJob",
    "Store",
    "backend_origin",
    "default_data_dir",
    "get_store",
    "history",
    "origin_of",
]

DB_NAME = "flux.sqlite3"
# 2: generations.origin (the backend that made them); rows from version 1 have '' and never match
_SCHEMA_VERSION = 2
#: The origin of everything the embedded local server makes (the preview engine, in any process).
EMBEDDED_ORIGIN = "embedded"
# tries at creating the index when another process is creating it at the same moment
_SETUP_ATTEMPTS = 10
# SQLite's default limit on ``?`` parameters is 999 (older builds); stay well under it
_CHUNK = 500
# One token per process, so recovery can tell this process's live jobs from a dead one's.
_PROCESS_TOKEN = uuid.uuid4().hex
# The only handle keys the journal keeps: nothing else (and so no credential) reaches the disk.
_HANDLE_KEYS = ("request_id", "status_url", "response_url", "cancel_url", "endpoint", "backend", "app_id")


def origin_of(kind: str | None, queue_url: str | None, app_id: str | None = None) -> str:
    """Where generations were made, as a short string: the cache only serves a request from the
    same origin.

    ``"embedded"`` for the embedded local server (one origin everywhere: it always runs the
    preview engine), else ``"<kind> <scheme>://<host>[:port][/path]/<app id>"``, e.g.
    ``"fal https://queue.fal.run/fal-ai/flux-lora"``. User info, query and fragment of the URL are
    left out (a URL may carry a token). Pure.
    """
    if kind == "embedded":
        return EMBEDDED_ORIGIN
    if not kind or not queue_url:
        return ""
    parts = urlsplit(queue_url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    path = parts.path.rstrip("/")
    return f"{kind} {parts.scheme.lower()}://{netloc}{path}/{(app_id or APP_ID).strip('/')}"


def backend_origin(backend: Any, app_id: str | None = None) -> str:
    """:func:`origin_of` a client's backend (anything with ``.kind`` and ``.queue_url``)."""
    return origin_of(getattr(backend, "kind", None), getattr(backend, "queue_url", None), app_id)


def _journal_origin(handle_info: dict[str, Any]) -> str:
    """The origin of a journaled job, from the handle info the client recorded when submitting it."""
    return origin_of(handle_info.get("backend"), handle_info.get("endpoint"), handle_info.get("app_id"))


def default_data_dir() -> Path:
    """The data folder: ``$FLUX_NB_DATA_DIR`` if set (read now), else the platform's user data folder."""
    env = os.environ.get("FLUX_NB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("flux-nb"))


@dataclass(frozen=True)
class HistoryEntry:
    """One past generation as the index records it (images stay on disk until :meth:`load`)."""

    id: int
    created_at: datetime
    prompt: str
    request: FluxRequest
    seed: int
    request_id: str | None
    backend: str
    cache_key: str
    paths: tuple[Path, ...]
    origin: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    nsfw: tuple[bool, ...] = ()
    images: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def files_exist(self) -> bool:
        """Whether every image file of this generation is still on disk."""
        return all(p.is_file() for p in self.paths)

    def load(self) -> FluxResult:
        """The generation with its images read back from disk (``cached=True``)."""
        images = []
        for info, path in zip(self.images, self.paths):
            images.append(
                FluxImage(
                    data=path.read_bytes(),
                    content_type=info.get("content_type", "image/jpeg"),
                    width=int(info.get("width", 0)),
                    height=int(info.get("height", 0)),
                    url=info.get("url"),
                    file_name=info.get("file_name"),
                    nsfw=bool(info.get("nsfw", False)),
                    path=path,
                )
            )
        return FluxResult(
            images=images,
            seed=self.seed,
            request=self.request,
            prompt=self.prompt,
            has_nsfw_concepts=list(self.nsfw),
            timings=dict(self.timings),
            request_id=self.request_id,
            backend=self.backend,
            created_at=self.created_at,
            cached=True,
        )


@dataclass(frozen=True)
class PendingJob:
    """A journaled job that was submitted but whose images were never saved."""

    request_id: str
    request: FluxRequest
    handle_info: dict[str, Any]
    submitted_at: datetime
    process_token: str

    @property
    def response_url(self) -> str | None:
        return self.handle_info.get("response_url")

    @property
    def status_url(self) -> str | None:
        return self.handle_info.get("status_url")

    @property
    def cancel_url(self) -> str | None:
        return self.handle_info.get("cancel_url")

    @property
    def endpoint(self) -> str | None:
        return self.handle_info.get("endpoint")

    @property
    def from_this_process(self) -> bool:
        """True when this process submitted it (so it is probably still running here)."""
        return self.process_token == _PROCESS_TOKEN


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_key TEXT NOT NULL,
    request_json TEXT NOT NULL,
    seed INTEGER NOT NULL,
    request_id TEXT,
    backend TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL,
    created_at TEXT NOT NULL,
    timings_json TEXT NOT NULL DEFAULT '{}',
    nsfw_json TEXT NOT NULL DEFAULT '[]',
    images_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS generations_cache_key ON generations (cache_key, id);
CREATE INDEX IF NOT EXISTS generations_request_id ON generations (request_id);
CREATE TABLE IF NOT EXISTS journal (
    request_id TEXT PRIMARY KEY,
    cache_key TEXT NOT NULL,
    request_json TEXT NOT NULL,
    handle_json TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    process_token TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_cache_key ON journal (cache_key);
CREATE TABLE IF NOT EXISTS sweep_seeds (
    signature TEXT PRIMARY KEY,
    seed INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
"""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:64] or "image"


class Store:
    """The generations, history and job journal under one data folder.

    ``root`` defaults to :func:`default_data_dir` (read when the store is made). Safe to share
    between threads; several processes (kernels) may use the same folder at once. Each thread
    keeps one SQLite connection open (opening one costs more than most queries); it is opened
    again when the index file was deleted or replaced, and never used across a fork.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_data_dir()
        self._init_lock = threading.Lock()
        self._local = threading.local()
        self._warned = False
        self._warned_rows = False

    def __repr__(self) -> str:
        return f"<Store {str(self.root)!r}>"

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    # -- connections --------------------------------------------------------------------------

    def _file_id(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.db_path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _thread_connection(self) -> sqlite3.Connection | None:
        """This thread's open connection, if it still points at the index file on disk."""
        cached = getattr(self._local, "conn", None)
        if cached is None:
            return None
        conn, pid, file_id = cached
        # while this connection is open its file keeps its inode, so a new file cannot look the same
        if pid == os.getpid() and file_id == self._file_id():
            return conn
        self._local.conn = None
        if pid == os.getpid():  # the file was deleted or replaced; a forked child just lets it go
            _close_quietly(conn)
        return None

    def _open(self, create: bool) -> sqlite3.Connection:
        try:
            if not create and not self.db_path.exists():
                raise FluxStoreError(f"no store index at {self.db_path}")
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        except FluxStoreError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise FluxStoreError(f"cannot open the flux-nb store at {self.root}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            # per connection; with WAL, a commit does not wait for the disk (a power cut may lose the last one)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._ensure_schema(conn)
        except sqlite3.Error as exc:
            _close_quietly(conn)
            raise FluxStoreError(f"the flux-nb store at {self.root} failed: {exc}") from exc
        self._local.conn = (conn, os.getpid(), self._file_id())
        return conn

    @contextmanager
    def _connect(self, *, create: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection (opened on first use), in a transaction."""
        conn = self._thread_connection() or self._open(create)
        try:
            conn.execute("BEGIN IMMEDIATE" if create else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # the connection may be left in a bad state: the next call opens a fresh one
            self._local.conn = None
            _close_quietly(conn)
            raise FluxStoreError(f"the flux-nb store at {self.root} failed: {exc}") from exc

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the index if this connection's file is not at our schema version.

        Asked of the file itself on every new connection: the folder may have been deleted and
        made again since (even by another process).
        """
        if _schema_version(conn) == _SCHEMA_VERSION:
            return
        with self._init_lock:
            for attempt in range(_SETUP_ATTEMPTS):
                try:
                    # WAL: readers never block the writer, and several kernels can share the folder.
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(_SCHEMA)
                    _migrate(conn)
                    return
                except sqlite3.OperationalError as exc:
                    # Processes creating the same new index at once can meet in SQLite's lock
                    # upgrade, which fails at once instead of waiting: wait a little and try again.
                    if not _may_be_busy(exc) or attempt == _SETUP_ATTEMPTS - 1:
                        raise
                    time.sleep(0.02 * (attempt + 1))

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"flux-nb store unavailable, carrying on without it: {exc}", RuntimeWarning, stacklevel=3)

    def _decode_rows(self, table: str, rows: Iterable[tuple[Any, ...]], decode: Any) -> list[Any]:
        """``decode(row)`` for each row, skipping rows that cannot be read (warned once per store).

        A row written by a newer flux-nb, or damaged by hand, must not hide every other row.
        """
        out = []
        for row in rows:
            try:
                out.append(decode(row))
            except _DECODE_ERRORS as exc:
                if not self._warned_rows:
                    self._warned_rows = True
                    warnings.warn(
                        f"flux-nb store: skipping a {table} entry that cannot be read ({type(exc).__name__}: {exc})",
                        RuntimeWarning,
                        stacklevel=4,
                    )
        return out

    # -- saving -------------------------------------------------------------------------------

    def save(self, result: FluxResult, *, origin: str | None = None) -> FluxResult:
        """Write the result's images (metadata embedded) and index the generation; set ``image.path``.

        ``origin`` is where the images were made (:func:`origin_of`); by default it is read from
        the job's journal entry (the client journals every job it submits, with its backend), and
        a generation of the embedded server is ``"embedded"``. A generation of unknown origin is
        kept in the history but never served from the cache.

        Files are written atomically (a temp file, then ``os.replace``). Raises
        :class:`FluxStoreError` if the folder cannot be written or the parameters cannot be
        embedded; no file of the generation is left on disk and the result in memory is untouched
        then. Returns the same result object.
        """
        created = result.created_at if result.created_at.tzinfo else result.created_at.replace(tzinfo=timezone.utc)
        folder = self.images_dir / created.astimezone().strftime("%Y-%m-%d")
        stem = _safe_name(result.request_id or f"{result.request.cache_key()[:16]}-{uuid.uuid4().hex[:8]}")
        written: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(result.images):
                target = folder / f"{stem}-{index}.{image.extension}"
                if target.exists():  # the same request id saved twice: keep both
                    target = folder / f"{stem}-{uuid.uuid4().hex[:8]}-{index}.{image.extension}"
                data = embed(image.data, image.content_type, result, index)
                _atomic_write(target, data)
                written.append(target)
        except OSError as exc:
            for path in written:
                _unlink_quietly(path)
            raise FluxStoreError(f"cannot save images under {folder}: {exc.strerror or exc}") from exc
        except ValueError as exc:  # the metadata could not be embedded: save all images or none
            for path in written:
                _unlink_quietly(path)
            raise FluxStoreError(f"cannot embed the parameters in image {len(written)} of {stem}: {exc}") from exc

        images_info = [
            {
                "path": str(path),
                "content_type": image.content_type,
                "width": image.width,
                "height": image.height,
                "file_name": image.file_name,
                "nsfw": bool(image.nsfw),
            }
            for image, path in zip(result.images, written)
        ]
        request = result.request
        try:
            with self._connect() as conn:
                if origin is None:
                    origin = self._origin_from_journal(conn, result)
                conn.execute(
                    "INSERT INTO generations (cache_key, request_json, seed, request_id, backend, origin, prompt,"
                    " created_at, timings_json, nsfw_json, images_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        request.cache_key(),
                        json.dumps(request.to_dict(), sort_keys=True),
                        int(result.seed),
                        result.request_id,
                        result.backend or "",
                        origin,
                        result.prompt or request.prompt,
                        _iso(created),
                        json.dumps(result.timings or {}, default=str),
                        json.dumps([bool(x) for x in result.has_nsfw_concepts]),
                        json.dumps(images_info),
                    ),
                )
        except FluxStoreError:
            for path in written:
                _unlink_quietly(path)
            raise
        for image, path in zip(result.images, written):
            image.path = path
        return result

    @staticmethod
    def _origin_from_journal(conn: sqlite3.Connection, result: FluxResult) -> str:
        if result.request_id:
            row = conn.execute("SELECT handle_json FROM journal WHERE request_id = ?", (str(result.request_id),)).fetchone()
            if row is not None:
                try:
                    return _journal_origin(json.loads(row[0]))
                except _DECODE_ERRORS:
                    return ""  # an unreadable entry: unknown origin, kept in history, never served as cache
        return EMBEDDED_ORIGIN if result.backend == "embedded" else ""

    # -- reading ------------------------------------------------------------------------------

    def _entries(self, sql: str, params: tuple[Any, ...]) -> list[HistoryEntry]:
        try:
            with self._connect(create=False) as conn:
                rows = conn.execute(sql, params).fetchall()
        except FluxStoreError as exc:
            if self.db_path.exists():
                self._warn(exc)
            return []
        return self._decode_rows("history", rows, _entry_from_row)

    def lookup(self, request: FluxRequest, *, origin: str) -> FluxResult | None:
        """A finished generation of this exact request made at ``origin``, read back from disk
        (``cached=True``).

        ``origin`` is where the caller would send the request (:func:`backend_origin` of its
        client): a generation made elsewhere never matches. Only requests with an explicit seed are
        looked up (an unseeded request is random by design). Returns None when nothing matches or
        its files are gone.
        """
        if request.seed is None or not origin:
            return None
        sql = _SELECT + " WHERE cache_key = ? AND origin = ? ORDER BY id DESC LIMIT 5"
        for entry in self._entries(sql, (request.cache_key(), origin)):
            if entry.paths and entry.files_exist:
                try:
                    return entry.load()
                except OSError:
                    continue
        return None

    def has(self, request: FluxRequest, *, origin: str) -> bool:
        """Whether :meth:`lookup` would find this request, without reading the images."""
        return self.has_many([request], origin=origin)[0]

    def has_many(self, requests: Iterable[FluxRequest], *, origin: str) -> list[bool]:
        """:meth:`has` for many requests at once: one connection, one query per 500 requests.

        The answers are in the order of ``requests``. A broken store answers False for all.
        """
        requests = list(requests)
        keys = [r.cache_key() if r.seed is not None else None for r in requests]
        wanted = sorted({k for k in keys if k is not None})
        found: set[str] = set()
        if wanted and origin:
            try:
                with self._connect(create=False) as conn:
                    for start in range(0, len(wanted), _CHUNK):
                        chunk = wanted[start : start + _CHUNK]
                        rows = conn.execute(
                            "SELECT cache_key, images_json FROM generations WHERE origin = ? AND cache_key IN"
                            f" ({','.join('?' * len(chunk))})",
                            (origin, *chunk),
                        ).fetchall()
                        for key, images in rows:
                            if key in found:
                                continue
                            try:
                                paths = [Path(info["path"]) for info in json.loads(images)]
                            except _DECODE_ERRORS:
                                continue  # an unreadable row is no cache hit (lookup skips it too)
                            if paths and all(p.is_file() for p in paths):
                                found.add(key)
            except FluxStoreError as exc:
                if self.db_path.exists():
                    self._warn(exc)
        return [k is not None and k in found for k in keys]

    def history(self, limit: int | None = 20, search: str | None = None) -> list[HistoryEntry]:
        """Past generations, newest first; ``search`` keeps those whose prompt contains it (any case)."""
        sql, params = _SELECT, ()
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql += " WHERE prompt LIKE ? ESCAPE '\\'"
            params = (f"%{escaped}%",)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, int(limit))
        return self._entries(sql, params)

    def get(self, id: int) -> HistoryEntry | None:
        """The history entry with this id, or None."""
        found = self._entries(_SELECT + " WHERE id = ?", (int(id),))
        return found[0] if found else None

    def load(self, id: int) -> FluxResult | None:
        """The generation with this id, images read back from disk; None if unknown or files are gone."""
        entry = self.get(id)
        if entry is None or not entry.files_exist:
            return None
        return entry.load()

    def find_request_id(self, request_id: str) -> HistoryEntry | None:
        """The saved generation of a server job, if any."""
        found = self._entries(_SELECT + " WHERE request_id = ? ORDER BY id DESC LIMIT 1", (request_id,))
        return found[0] if found else None

    # -- journal ------------------------------------------------------------------------------

    def journal_submit(self, request: FluxRequest, handle_info: dict[str, Any]) -> None:
        """Record a submitted job: its request and the URLs to fetch or cancel it.

        Only ``request_id``, ``status_url``, ``response_url``, ``cancel_url``, ``endpoint``,
        ``backend`` and ``app_id`` are kept. Raises ValueError when ``handle_info`` has no
        ``request_id`` (a caller's mistake); a broken store never raises, it only warns.
        """
        info = {k: handle_info[k] for k in _HANDLE_KEYS if handle_info.get(k) is not None}
        request_id = info.get("request_id")
        if not request_id:
            raise ValueError("journal_submit needs handle_info['request_id']")
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO journal (request_id, cache_key, request_json, handle_json,"
                    " submitted_at, process_token) VALUES (?,?,?,?,?,?)",
                    (
                        str(request_id),
                        request.cache_key(),
                        json.dumps(request.to_dict(), sort_keys=True),
                        json.dumps(info, sort_keys=True),
                        _iso(_now()),
                        _PROCESS_TOKEN,
                    ),
                )
        except FluxStoreError as exc:
            self._warn(exc)

    def journal_done(self, request_id: str) -> None:
        """Forget a journaled job (its images are saved, or it failed or was cancelled). Never raises."""
        try:
            with self._connect(create=False) as conn:
                conn.execute("DELETE FROM journal WHERE request_id = ?", (str(request_id),))
        except FluxStoreError as exc:
            if self.db_path.exists():
                self._warn(exc)

    def pending(self, request: FluxRequest | None = None, *, include_own: bool = True) -> list[PendingJob]:
        """Journaled jobs, oldest first; only those of ``request`` when given (seeded requests only).

        ``include_own=False`` leaves out jobs this process submitted (still running here). Entries
        that cannot be read are skipped with a warning.
        """
        sql, params = "SELECT request_id, request_json, handle_json, submitted_at, process_token FROM journal", ()
        if request is not None:
            if request.seed is None:
                return []
            sql += " WHERE cache_key = ?"
            params = (request.cache_key(),)
        sql += " ORDER BY submitted_at"
        try:
            with self._connect(create=False) as conn:
                rows = conn.execute(sql, params).fetchall()
        except FluxStoreError as exc:
            if self.db_path.exists():
                self._warn(exc)
            return []
        rows = [row for row in rows if include_own or row[4] != _PROCESS_TOKEN]
        return self._decode_rows("journal", rows, _pending_from_row)

    # -- sweep seeds --------------------------------------------------------------------------

    def sweep_seed(self, signature: str, new_seed: int, *, renew: bool = False) -> int:
        """The seed remembered for an unseeded sweep with this signature, or ``new_seed`` (remembered).

        ``renew=True`` replaces the remembered seed with ``new_seed``. Falls back to ``new_seed``
        (not remembered) when the store is broken.
        """
        try:
            with self._connect() as conn:
                if not renew:
                    row = conn.execute("SELECT seed FROM sweep_seeds WHERE signature = ?", (signature,)).fetchone()
                    if row is not None:
                        return int(row[0])
                conn.execute(
                    "INSERT OR REPLACE INTO sweep_seeds (signature, seed, created_at) VALUES (?,?,?)",
                    (signature, int(new_seed), _iso(_now())),
                )
        except FluxStoreError as exc:
            self._warn(exc)
        return int(new_seed)


# what a row that cannot be decoded raises: bad JSON, a request that no longer validates
# (FluxValidationError is a ValueError), a bad timestamp, a missing or mistyped key
_DECODE_ERRORS = (ValueError, TypeError, KeyError, AttributeError)

_SELECT = (
    "SELECT id, cache_key, request_json, seed, request_id, backend, origin, prompt, created_at, timings_json,"
    " nsfw_json, images_json FROM generations"
)


# SQLite's primary result codes SQLITE_BUSY and SQLITE_LOCKED; the sqlite3 module names them only
# from Python 3.11 on
_BUSY_CODES = frozenset((getattr(sqlite3, "SQLITE_BUSY", 5), getattr(sqlite3, "SQLITE_LOCKED", 6)))


def _may_be_busy(exc: sqlite3.Error) -> bool:
    """Whether trying again may help: SQLite said busy or locked (any extended code of those), or
    the error carries no code to tell (Python 3.10 has no ``sqlite_errorcode``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return True  # the caller tries a bounded number of times, so an unknown error still ends
    return (code & 0xFF) in _BUSY_CODES


def _schema_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:  # no meta table: a new (empty) file
        return None
    return int(row[0]) if row is not None else None


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an index written by an older flux-nb up to :data:`_SCHEMA_VERSION` (idempotent, and
    safe when several processes open the same folder at once)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(generations)")}
        if "origin" not in columns:
            # version 1 did not record where images were made: '' never matches a lookup
            conn.execute("ALTER TABLE generations ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
        conn.execute("CREATE INDEX IF NOT EXISTS generations_origin_key ON generations (origin, cache_key, id)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or int(row[0]) < _SCHEMA_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),)
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _pending_from_row(row: tuple[Any, ...]) -> PendingJob:
    request_id, request_json, handle_json, submitted_at, token = row
    handle_info = json.loads(handle_json)
    if not isinstance(handle_info, dict):
        raise TypeError(f"handle info of {request_id} is a {type(handle_info).__name__}, not an object")
    return PendingJob(
        request_id=request_id,
        request=FluxRequest.from_dict(json.loads(request_json)),
        handle_info=handle_info,
        submitted_at=datetime.fromisoformat(submitted_at),
        process_token=token,
    )


def _entry_from_row(row: tuple[Any, ...]) -> HistoryEntry:
    (id_, cache_key, request_json, seed, request_id, backend, origin, prompt, created_at, timings, nsfw, images) = row
    image_info = tuple(json.loads(images))
    return HistoryEntry(
        id=int(id_),
        created_at=datetime.fromisoformat(created_at),
        prompt=prompt,
        request=FluxRequest.from_dict(json.loads(request_json)),
        seed=int(seed),
        request_id=request_id,
        backend=backend,
        origin=origin,
        cache_key=cache_key,
        paths=tuple(Path(info["path"]) for info in image_info),
        timings=json.loads(timings),
        nsfw=tuple(bool(x) for x in json.loads(nsfw)),
        images=image_info,
    )


def embed(data: bytes, content_type: str, result: FluxResult, index: int) -> bytes:
    """The image bytes with the generation's parameters embedded (see :mod:`flux_nb.metadata`)."""
    from .metadata import embed_metadata

    return embed_metadata(data, content_type, result, index)


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(Path(tmp))
        raise


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


_default_lock = threading.Lock()
_default: Store | None = None


def get_store() -> Store:
    """The process-wide store for the current data folder (made again if ``FLUX_NB_DATA_DIR`` changed)."""
    global _default
    root = default_data_dir()
    with _default_lock:
        if _default is None or _default.root != root:
            _default = Store(root)
        return _default


def history(limit: int | None = 20, search: str | None = None) -> list[HistoryEntry]:
    """Past generations in the default store, newest first (``search`` matches the prompt).

    ``flux_nb.history(search="fox")[0].load()`` gives the images back.
    """
    return get_store().history(limit=limit, search=search)
