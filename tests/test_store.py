"""The local store: saving, cache lookups, history, the journal, errors, threads and processes."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from flux_nb.params import FluxRequest
from flux_nb.result import FluxImage, FluxResult
from flux_nb.store import FluxStoreError, Store, backend_origin, default_data_dir, get_store, origin_of

#: Where the test results were "made": a local fal-compatible server.
HERE_ORIGIN = origin_of("endpoint", "http://127.0.0.1:8765")


def jpeg(color: str = "red", size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def make_result(prompt="a red fox", seed=7, request_id="req-1", n=1, **fields) -> FluxResult:
    request = FluxRequest(prompt, seed=seed, num_images=n, **fields)
    images = [FluxImage(jpeg(), "image/jpeg", 64, 48, nsfw=False) for _ in range(n)]
    return FluxResult(images, seed, request, request_id=request_id, backend="endpoint",
                      timings={"inference": 0.5}, has_nsfw_concepts=[False] * n)


def test_default_data_dir_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("FLUX_NB_DATA_DIR", str(tmp_path / "a"))
    assert default_data_dir() == tmp_path / "a"
    first = get_store()
    monkeypatch.setenv("FLUX_NB_DATA_DIR", str(tmp_path / "b"))
    second = get_store()
    assert first.root == tmp_path / "a" and second.root == tmp_path / "b" and get_store() is second


def test_save_writes_dated_files_and_sets_paths(tmp_path):
    store = Store(tmp_path)
    result = make_result(n=2)
    assert store.save(result) is result
    paths = [im.path for im in result.images]
    assert all(p is not None and p.is_file() for p in paths)
    assert paths[0].parent.parent == tmp_path / "images"
    assert paths[0].name == "req-1-0.jpeg" and paths[1].name == "req-1-1.jpeg"
    assert Image.open(paths[0]).size == (64, 48)
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".tmp")]
    # saving the same request id again keeps both generations
    again = make_result(n=1)
    store.save(again)
    assert again.images[0].path != paths[0] and paths[0].is_file()


def test_saved_files_carry_their_parameters(tmp_path):
    from flux_nb.metadata import read_metadata

    store = Store(tmp_path)
    result = store.save(make_result(seed=11))
    request = read_metadata(result.images[0].path)
    assert request.seed == 11 and request.prompt == "a red fox"


def test_lookup_returns_a_cached_copy_only_for_seeded_identical_requests(tmp_path):
    store = Store(tmp_path)
    saved = store.save(make_result(seed=5, image_size="square"), origin=HERE_ORIGIN)
    hit = store.lookup(FluxRequest("a red fox", seed=5, image_size=(512, 512)), origin=HERE_ORIGIN)  # other spelling
    assert hit is not None and hit.cached and hit.seed == 5 and hit.request_id == "req-1"
    assert hit.images[0].data == saved.images[0].path.read_bytes()
    assert hit.images[0].path == saved.images[0].path and hit.timings == {"inference": 0.5}
    assert store.has(FluxRequest("a red fox", seed=5, image_size="square"), origin=HERE_ORIGIN)
    assert store.lookup(FluxRequest("a red fox", seed=6, image_size="square"), origin=HERE_ORIGIN) is None
    assert store.lookup(FluxRequest("a red fox", image_size="square"), origin=HERE_ORIGIN) is None  # unseeded
    saved.images[0].path.unlink()
    # files gone: a miss for lookup, has and has_many alike
    assert store.lookup(FluxRequest("a red fox", seed=5, image_size="square"), origin=HERE_ORIGIN) is None
    assert store.has_many([FluxRequest("a red fox", seed=5, image_size="square")], origin=HERE_ORIGIN) == [False]


def test_history_newest_first_with_search_and_get(tmp_path):
    store = Store(tmp_path)
    for i, prompt in enumerate(["a red fox", "a blue car", "A RED barn", "50% off_sale"]):
        store.save(make_result(prompt=prompt, request_id=f"r{i}"))
    assert [e.prompt for e in store.history()] == ["50% off_sale", "A RED barn", "a blue car", "a red fox"]
    assert [e.prompt for e in store.history(search="red")] == ["A RED barn", "a red fox"]
    assert [e.prompt for e in store.history(search="0%")] == ["50% off_sale"]
    assert store.history(search="_s") and not store.history(search="x_y")
    assert len(store.history(limit=2)) == 2
    entry = store.history()[-1]
    assert store.get(entry.id) == entry and entry.request.seed == 7 and entry.backend == "endpoint"
    assert store.load(entry.id).images[0].data[:2] == b"\xff\xd8"
    assert store.get(999) is None
    assert store.find_request_id("r1").prompt == "a blue car"


def test_module_history_uses_the_default_store(data_dir):
    from flux_nb.store import history

    get_store().save(make_result(prompt="a default fox"))
    assert [e.prompt for e in history(search="default")] == ["a default fox"]


def test_index_never_holds_secrets(tmp_path):
    store = Store(tmp_path)
    request = FluxRequest("a fox", seed=1)
    store.journal_submit(request, {"request_id": "j1", "response_url": "http://h/r", "status_url": "http://h/s",
                                   "cancel_url": "http://h/c", "endpoint": "http://h", "key": "SECRET-KEY",
                                   "headers": {"Authorization": "Key SECRET-KEY"}})
    store.save(make_result())
    blob = (tmp_path / "flux.sqlite3").read_bytes()
    for extra in tmp_path.glob("flux.sqlite3-*"):
        blob += extra.read_bytes()
    assert b"SECRET-KEY" not in blob
    assert store.pending()[0].handle_info == {
        "request_id": "j1", "response_url": "http://h/r", "status_url": "http://h/s", "cancel_url": "http://h/c",
        "endpoint": "http://h",
    }


def test_journal_submit_pending_done(tmp_path):
    store = Store(tmp_path)
    r1, r2 = FluxRequest("a", seed=1), FluxRequest("b", seed=2)
    store.journal_submit(r1, {"request_id": "j1", "response_url": "u1"})
    store.journal_submit(r2, {"request_id": "j2", "response_url": "u2"})
    jobs = store.pending()
    assert [j.request_id for j in jobs] == ["j1", "j2"] and jobs[0].request == r1 and jobs[0].response_url == "u1"
    assert jobs[0].from_this_process
    assert [j.request_id for j in store.pending(r2)] == ["j2"]
    assert store.pending(include_own=False) == []
    store.journal_done("j1")
    store.journal_done("j1")  # twice is fine
    assert [j.request_id for j in store.pending()] == ["j2"]


def test_journal_entries_of_another_process_are_not_own(tmp_path):
    code = (
        "import sys; from flux_nb.store import Store; from flux_nb.params import FluxRequest;"
        "Store(sys.argv[1]).journal_submit(FluxRequest('a', seed=1), {'request_id': 'other', 'response_url': 'u'})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    jobs = Store(tmp_path).pending(include_own=False)
    assert [j.request_id for j in jobs] == ["other"] and not jobs[0].from_this_process


def test_a_folder_that_cannot_be_written_raises_a_clear_store_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    store = Store(blocker)
    result = make_result()
    with pytest.raises(FluxStoreError) as info:
        store.save(result)
    assert isinstance(info.value, OSError) and str(blocker) in str(info.value)
    assert result.images[0].path is None and result.images[0].data  # the caller keeps the result
    # reads and the journal carry on quietly
    assert store.lookup(result.request, origin=HERE_ORIGIN) is None and store.history() == [] and store.pending() == []
    with pytest.warns(RuntimeWarning):
        store.journal_submit(result.request, {"request_id": "x"})


def test_a_full_disk_leaves_no_partial_files(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.save(make_result(request_id="ok"))
    real_replace = os.replace
    calls = []

    def full_disk(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second image of the job hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(FluxStoreError, match="No space left"):
        store.save(make_result(request_id="full", n=2))
    monkeypatch.setattr(os, "replace", real_replace)
    names = sorted(p.name for p in (tmp_path / "images").rglob("*"))
    assert [n for n in names if n.startswith("full") or n.startswith(".tmp")] == []
    assert [e.request_id for e in store.history()] == ["ok"]


def test_many_threads_save_at_once(tmp_path):
    store = Store(tmp_path)
    errors = []

    def work(i):
        try:
            store.save(make_result(prompt=f"p{i}", seed=i, request_id=f"t{i}"), origin=HERE_ORIGIN)
            assert store.lookup(FluxRequest(f"p{i}", seed=i), origin=HERE_ORIGIN) is not None
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store.history(limit=None)) == 16


def test_two_processes_share_one_folder(tmp_path):
    code = (
        "import sys, io; sys.path.insert(0, sys.argv[2]);"
        "from test_store import make_result; from flux_nb.store import Store;"
        "s = Store(sys.argv[1]);"
        "[s.save(make_result(prompt=f'{sys.argv[3]}{i}', request_id=f'{sys.argv[3]}{i}')) for i in range(10)]"
    )
    here = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), here, tag]) for tag in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    entries = Store(tmp_path).history(limit=None)
    assert len(entries) == 20 and len({e.request_id for e in entries}) == 20
    assert json.loads(json.dumps([str(p) for e in entries for p in e.paths]))


# -- the cache is scoped by origin: where the images were made --------------------------------------


def test_origin_names_the_backend_and_app_but_never_credentials():
    from flux_nb.backend import resolve_backend

    assert origin_of("embedded", "http://flux-nb.embedded") == "embedded"
    fal = backend_origin(resolve_backend("fal", "k-1"))
    assert fal == "fal https://queue.fal.run/fal-ai/flux-lora" and "k-1" not in fal
    assert backend_origin(resolve_backend("fal", "k-1"), "fal-ai/flux-lora") == fal
    assert backend_origin(resolve_backend("fal", "k-1"), "fal-ai/other") != fal
    local = origin_of("endpoint", "http://user:tok@127.0.0.1:8765/base/?t=secret")
    assert local == "endpoint http://127.0.0.1:8765/base/fal-ai/flux-lora"
    assert origin_of("endpoint", "http://127.0.0.1:8766") != origin_of("endpoint", "http://127.0.0.1:8765")
    assert origin_of(None, None) == "" and origin_of("endpoint", "") == ""


def test_a_preview_result_is_never_served_for_another_backend(live_server, data_dir):
    """The embedded preview server's placeholder images are cached for the embedded backend only."""
    from flux_nb.client import FluxClient

    embedded = FluxClient(endpoint="embedded")
    server = live_server(workers=1)
    other = FluxClient(endpoint=server.url)
    try:
        made = embedded.generate("a scoped fox", seed=3, image_size="square")
        assert not made.cached
        request = made.request
        store = get_store()
        (entry,) = store.history()
        assert entry.origin == "embedded"
        # the same backend: a hit, through the store and through the client
        assert store.lookup(request, origin=backend_origin(embedded.backend)) is not None
        assert embedded.generate("a scoped fox", seed=3, image_size="square").cached
        # a different endpoint, and fal.ai: misses
        assert store.lookup(request, origin=backend_origin(other.backend)) is None
        assert not store.has(request, origin=backend_origin(other.backend))
        fal = FluxClient(endpoint="fal", key="not-a-real-key")
        assert store.lookup(request, origin=backend_origin(fal.backend)) is None
        fresh = other.generate("a scoped fox", seed=3, image_size="square")
        assert not fresh.cached  # sent to that server, not served from the preview's files
        assert other.generate("a scoped fox", seed=3, image_size="square").cached
        origins = {e.origin for e in store.history()}
        assert origins == {"embedded", backend_origin(other.backend)}
    finally:
        embedded.close()
        other.close()


def test_an_index_of_schema_1_is_migrated_and_its_rows_never_match(tmp_path):
    import sqlite3

    image = tmp_path / "images" / "old-0.jpeg"
    image.parent.mkdir(parents=True)
    image.write_bytes(jpeg())
    request = FluxRequest("an old fox", seed=1)
    conn = sqlite3.connect(tmp_path / "flux.sqlite3")
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE generations (
            id INTEGER PRIMARY KEY AUTOINCREMENT, cache_key TEXT NOT NULL, request_json TEXT NOT NULL,
            seed INTEGER NOT NULL, request_id TEXT, backend TEXT NOT NULL DEFAULT '', prompt TEXT NOT NULL,
            created_at TEXT NOT NULL, timings_json TEXT NOT NULL DEFAULT '{}', nsfw_json TEXT NOT NULL DEFAULT '[]',
            images_json TEXT NOT NULL DEFAULT '[]');
        CREATE INDEX generations_cache_key ON generations (cache_key, id);
        """
    )
    conn.execute(
        "INSERT INTO generations (cache_key, request_json, seed, request_id, backend, prompt, created_at, images_json)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (request.cache_key(), json.dumps(request.to_dict()), 1, "old", "embedded", "an old fox",
         "2025-01-01T00:00:00+00:00", json.dumps([{"path": str(image), "content_type": "image/jpeg"}])),
    )
    conn.commit()
    conn.close()
    store = Store(tmp_path)
    (entry,) = store.history()  # still in the history
    assert entry.origin == "" and entry.request_id == "old"
    for origin in ("embedded", HERE_ORIGIN):
        assert store.lookup(request, origin=origin) is None and not store.has(request, origin=origin)
    conn = sqlite3.connect(tmp_path / "flux.sqlite3")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    conn.close()
    # new rows of the same request do match
    store.save(make_result(prompt="an old fox", seed=1, request_id="new"), origin=HERE_ORIGIN)
    assert store.lookup(request, origin=HERE_ORIGIN).request_id == "new"
    assert Store(tmp_path).lookup(request, origin=HERE_ORIGIN) is not None  # opening again is fine


def test_save_takes_the_origin_from_the_job_journal(tmp_path):
    store = Store(tmp_path)
    result = make_result(request_id="j-9")
    store.journal_submit(result.request, {"request_id": "j-9", "endpoint": "http://127.0.0.1:8765",
                                          "backend": "endpoint", "status_url": "http://127.0.0.1:8765/s"})
    store.save(result)
    assert store.find_request_id("j-9").origin == HERE_ORIGIN
    unknown = store.save(make_result(request_id="never-journaled", seed=8))
    assert store.find_request_id("never-journaled").origin == ""  # unknown: history only
    assert store.lookup(unknown.request, origin=HERE_ORIGIN) is None


def test_has_many_answers_in_order_with_one_connection(tmp_path, monkeypatch):
    store = Store(tmp_path)
    for seed in range(0, 1200, 2):  # every even seed is in the cache
        store.save(make_result(seed=seed, request_id=f"s{seed}"), origin=HERE_ORIGIN)
    requests = [FluxRequest("a red fox", seed=s) for s in range(1200)] + [FluxRequest("a red fox")]
    opened = []  # transactions: Store._connect calls
    real_connect = Store._connect
    monkeypatch.setattr(Store, "_connect", lambda self, **k: opened.append(1) or real_connect(self, **k))
    flags = store.has_many(requests, origin=HERE_ORIGIN)
    assert len(opened) == 1
    assert flags == [s % 2 == 0 for s in range(1200)] + [False]
    assert store.has_many(requests[:4], origin="embedded") == [False] * 4
    assert store.has_many([], origin=HERE_ORIGIN) == []


def test_each_thread_keeps_one_connection_and_reopens_when_the_index_is_replaced(tmp_path, monkeypatch):
    import shutil
    import sqlite3

    store = Store(tmp_path / "data")
    store.save(make_result(seed=1, request_id="a"), origin=HERE_ORIGIN)
    opened = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(1) or real_connect(*a, **k))
    for _ in range(20):
        assert store.lookup(FluxRequest("a red fox", seed=1), origin=HERE_ORIGIN) is not None
    store.journal_submit(FluxRequest("a", seed=2), {"request_id": "j"})
    store.journal_done("j")
    assert opened == []  # the thread's connection from the save is reused
    # the whole data folder is deleted: the next call opens the new index, with its schema
    shutil.rmtree(tmp_path / "data")
    assert store.lookup(FluxRequest("a red fox", seed=1), origin=HERE_ORIGIN) is None
    assert store.history() == []
    store.save(make_result(seed=3, request_id="b"), origin=HERE_ORIGIN)
    assert len(opened) == 1
    assert [e.request_id for e in Store(tmp_path / "data").history()] == ["b"] and len(opened) == 2
    # another thread gets its own connection
    seen = []
    worker = threading.Thread(target=lambda: seen.append(len(store.history())))
    worker.start()
    worker.join()
    assert seen == [1] and len(opened) == 3  # the fresh Store above, and the worker thread


def test_creating_the_index_retries_when_another_process_holds_the_lock(tmp_path, monkeypatch):
    import sqlite3

    import flux_nb.store as store_module

    # a genuine "database is locked" from SQLite, as a process creating the same index would cause
    holder = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")
    blocked = sqlite3.connect(tmp_path / "other.db", timeout=0)
    with pytest.raises(sqlite3.OperationalError) as info:
        blocked.execute("INSERT INTO t VALUES (1)")
    busy = info.value
    holder.close()
    blocked.close()
    real_migrate = store_module._migrate
    failures = [busy, busy]

    def migrate_after_two_busy_tries(conn):
        if failures:
            raise failures.pop()
        return real_migrate(conn)

    monkeypatch.setattr(store_module, "_migrate", migrate_after_two_busy_tries)
    store = Store(tmp_path / "data")
    store.save(make_result(request_id="after-busy"), origin=HERE_ORIGIN)
    assert failures == [] and store.find_request_id("after-busy") is not None
    # an error that lasts (a code-less one is retried a bounded number of times): a clear store error
    monkeypatch.setattr(store_module, "_migrate", lambda conn: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    with pytest.raises(FluxStoreError):
        Store(tmp_path / "fresh").save(make_result(request_id="never"), origin=HERE_ORIGIN)


def _failing_migrate_then_real(monkeypatch, errors):
    import flux_nb.store as store_module

    real_migrate = store_module._migrate
    pending = list(errors)

    def migrate(conn):
        if pending:
            raise pending.pop(0)
        return real_migrate(conn)

    monkeypatch.setattr(store_module, "_migrate", migrate)
    return pending


def test_setup_retry_works_without_the_python_311_error_codes(tmp_path, monkeypatch):
    import sqlite3

    # Python 3.10: no sqlite3.SQLITE_BUSY / SQLITE_LOCKED, and errors carry no sqlite_errorcode
    monkeypatch.delattr(sqlite3, "SQLITE_BUSY", raising=False)
    monkeypatch.delattr(sqlite3, "SQLITE_LOCKED", raising=False)
    pending = _failing_migrate_then_real(monkeypatch, [sqlite3.OperationalError("database is locked")])
    store = Store(tmp_path / "data")
    store.save(make_result(request_id="on-310"), origin=HERE_ORIGIN)
    assert pending == [] and store.find_request_id("on-310") is not None


def test_setup_retries_extended_busy_codes_but_not_other_errors(tmp_path, monkeypatch):
    import sqlite3

    busy_snapshot = sqlite3.OperationalError("database is locked")
    busy_snapshot.sqlite_errorcode = 517  # SQLITE_BUSY_SNAPSHOT: an extended code of SQLITE_BUSY
    pending = _failing_migrate_then_real(monkeypatch, [busy_snapshot])
    store = Store(tmp_path / "data")
    store.save(make_result(request_id="after-snapshot"), origin=HERE_ORIGIN)
    assert pending == []
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = 10  # SQLITE_IOERR: retrying cannot help
    pending = _failing_migrate_then_real(monkeypatch, [io_error, io_error])
    with pytest.raises(FluxStoreError):
        Store(tmp_path / "fresh").save(make_result(request_id="never"), origin=HERE_ORIGIN)
    assert len(pending) == 1  # tried once, not again


def _corrupt(store: Store, sql: str, params=()) -> None:
    import sqlite3

    conn = sqlite3.connect(store.db_path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "column, bad",
    [("request_json", "{not json"), ("request_json", json.dumps({"prompt": ""})), ("created_at", "yesterday"),
     ("images_json", "[{}]")],
)
def test_a_row_that_cannot_be_read_is_skipped_with_one_warning(tmp_path, column, bad):
    store = Store(tmp_path)
    good = make_result(prompt="a good fox", request_id="good")
    store.save(good, origin=HERE_ORIGIN)
    store.save(make_result(prompt="a broken fox", request_id="broken"), origin=HERE_ORIGIN)
    store.save(make_result(prompt="another good fox", request_id="good-2", seed=8), origin=HERE_ORIGIN)
    _corrupt(store, f"UPDATE generations SET {column} = ? WHERE request_id = 'broken'", (bad,))
    with pytest.warns(RuntimeWarning, match="skipp") as caught:
        prompts = [e.prompt for e in store.history()]
        store.history(search="fox")
    assert prompts == ["another good fox", "a good fox"]
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1  # warned once
    # the cache lookup of the same request falls back to an older good row instead of raising
    store.save(make_result(prompt="a good fox", request_id="dupe"), origin=HERE_ORIGIN)
    _corrupt(store, f"UPDATE generations SET {column} = ? WHERE request_id = 'dupe'", (bad,))
    found = store.lookup(good.request, origin=HERE_ORIGIN)
    assert found is not None and found.request_id == "good"
    assert store.has(good.request, origin=HERE_ORIGIN)


@pytest.mark.parametrize(
    "column, bad", [("request_json", "{not json"), ("handle_json", "[1, 2"), ("submitted_at", "soon")]
)
def test_a_journal_row_that_cannot_be_read_is_skipped(tmp_path, column, bad):
    store = Store(tmp_path)
    store.journal_submit(FluxRequest("a", seed=1), {"request_id": "j1", "response_url": "u1"})
    store.journal_submit(FluxRequest("b", seed=2), {"request_id": "j2", "response_url": "u2"})
    _corrupt(store, f"UPDATE journal SET {column} = ? WHERE request_id = 'j1'", (bad,))
    with pytest.warns(RuntimeWarning, match="skipp"):
        assert [j.request_id for j in store.pending()] == ["j2"]
    # saving the generation of a job whose journal entry is unreadable still works
    result = make_result(request_id="j1", seed=1)
    store.save(result)
    assert store.find_request_id("j1") is not None


def test_journal_submit_without_a_request_id_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="request_id"):
        Store(tmp_path).journal_submit(FluxRequest("a", seed=1), {"response_url": "u"})


@pytest.mark.parametrize("error", [ValueError("metadata too large"), OSError("pillow cannot read it")])
def test_a_failed_metadata_embed_leaves_no_files_and_is_a_store_error(tmp_path, monkeypatch, error):
    import flux_nb.store as store_module

    real_embed = store_module.embed

    def embed_fails_on_second(data, content_type, result, index):
        if index == 1:
            raise error
        return real_embed(data, content_type, result, index)

    monkeypatch.setattr(store_module, "embed", embed_fails_on_second)
    store = Store(tmp_path)
    result = make_result(n=2)
    with pytest.raises(FluxStoreError):
        store.save(result, origin=HERE_ORIGIN)
    assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []
    assert all(im.path is None for im in result.images) and store.history() == []
