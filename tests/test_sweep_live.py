"""Sweeps against the real local server over loopback: streaming, fail-soft cells, retry, Ctrl-C,
cache hits, resume after a crash, recovery from the journal, grids, figures and saved files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from flux_nb.recover import recover
from flux_nb.client import FluxClient
from flux_nb.params import FluxRequest
from flux_nb.server.engines.base import EngineInputError
from flux_nb.server.engines.preview import PreviewEngine
from flux_nb.store import get_store
from flux_nb.sweeps import SweepInterrupted, sweep

HERE = Path(__file__).parent


def stats(server) -> dict:
    return httpx.get(f"{server.url}/stats").json()


class FlakyEngine:
    """The preview engine, except that it refuses prompts containing a word in ``fail_words``."""

    name = "flaky"
    max_concurrency = None

    def __init__(self) -> None:
        self.inner = PreviewEngine()
        self.fail_words = {"FAIL"}

    def check(self, request: FluxRequest) -> None:
        self.inner.check(request)

    def generate(self, request, seed, ctx):
        if any(word in request.prompt for word in self.fail_words):
            raise EngineInputError("prompt", request.prompt, "the model refuses this prompt")
        return self.inner.generate(request, seed, ctx)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def client_for():
    made = []

    def make(server, **kw):
        client = FluxClient(endpoint=server.url, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_every_cell_runs_and_is_saved(live_server, client_for, data_dir):
    server = live_server(workers=4)
    client = client_for(server)
    result = sweep("a {red|blue} fox", guidance="2-4", seed=9, image_size="square", client=client, progress=False)
    assert [c.status for c in result.cells] == ["done"] * 6
    assert stats(server)["jobs"]["submitted"] == 6
    cell = result.cell(prompt="a blue fox", guidance=3)
    assert cell.request.prompt == "a blue fox" and cell.request.guidance_scale == 3.0 and cell.request.seed == 9
    got = cell.result
    assert got.seed == 9 and got.images[0].to_pil().size == (512, 512)
    assert cell.paths and cell.paths[0].is_file() and data_dir in cell.paths[0].parents
    assert got.images[0].data == cell.paths[0].read_bytes()  # offloaded to disk, read back on demand
    assert cell.thumbnail and max(Image.open(__import__("io").BytesIO(cell.thumbnail)).size) <= 256
    rows = result.records()
    assert rows[0]["axis.prompt"] == "a red fox" and rows[0]["axis.guidance_scale"] == 2.0
    assert rows[0]["seed_used"] == 9 and rows[0]["status"] == "done" and rows[0]["paths"]
    assert "6 finished" in str(result.summary())


def test_rerun_is_served_from_the_cache_with_zero_submits(live_server, client_for):
    server = live_server(workers=4)
    client = client_for(server)
    first = sweep("a fox", steps=[2, 4, 6], client=client, progress=False)  # unseeded: seed drawn, remembered
    before = stats(server)["requests"]["submit"]
    again = sweep("a fox", steps=[2, 4, 6], client=client, progress=False)
    assert stats(server)["requests"]["submit"] == before == 3
    assert [c.status for c in again.cells] == ["cached"] * 3 and again.seed == first.seed
    assert again.cells[1].result.images[0].data == first.cells[1].result.images[0].data
    fresh = sweep("a fox", steps=[2, 4, 6], cache=False, client=client, progress=False)
    assert stats(server)["requests"]["submit"] == 6 and [c.status for c in fresh.cells] == ["done"] * 3
    assert fresh.seed == first.seed  # regenerated with the remembered seed
    assert sweep("a fox", steps=[2, 4, 6], client=client, progress=False).seed == first.seed


def test_a_failed_cell_does_not_stop_the_sweep_and_retry_runs_only_those(live_server, client_for):
    engine = FlakyEngine()
    server = live_server(engine=engine, workers=4)
    client = client_for(server)
    result = sweep(["a fox", "a FAIL fox"], steps=[2, 3], seed=1, client=client, progress=False)
    assert [c.status for c in result.cells] == ["done", "done", "failed", "failed"]
    assert all(c.error is not None and c.result is None for c in result.failed)
    assert "failed" in (result.records()[2]["status"]) and result.records()[2]["error"]
    sheet = result.grid(thumb=96)  # failed cells are drawn with their error, not skipped
    assert sheet.size[0] > 2 * 96
    submits = stats(server)["requests"]["submit"]
    engine.fail_words.clear()
    assert result.retry_failed() is result
    assert [c.status for c in result.cells] == ["done"] * 4
    assert stats(server)["requests"]["submit"] == submits + 2


@pytest.mark.slow
def test_ctrl_c_cancels_queued_jobs_on_the_server_and_keeps_what_finished(live_server, client_for):
    server = live_server(workers=2, latency=1.5)
    client = client_for(server)

    def interrupt_when_two_are_done():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if stats(server)["jobs"]["completed"] >= 2:
                time.sleep(0.3)  # the next two jobs are running now
                os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, like Jupyter's stop button
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_when_two_are_done, daemon=True)
    thread.start()
    with pytest.raises(SweepInterrupted) as info:
        sweep("a fox", steps=[1, 2, 3, 4, 5, 6, 7, 8], seed=1, concurrency=2, client=client, progress=False)
    thread.join()
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt) and result.interrupted
    statuses = [c.status for c in result.cells]
    assert statuses.count("done") >= 2 and "cancelled" in statuses and "pending" not in statuses
    assert all(c.result is not None for c in result.cells if c.status == "done")
    deadline = time.monotonic() + 20
    while stats(server)["jobs"]["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = stats(server)["jobs"]
    assert jobs["cancelled"] >= 1 and jobs["submitted"] < 8  # queued cells were never sent
    # re-running resumes: finished cells come from the cache, the rest are generated
    done_before = statuses.count("done")
    again = sweep("a fox", steps=[1, 2, 3, 4, 5, 6, 7, 8], seed=1, client=client, progress=False)
    assert [c.status for c in again.cells].count("cached") == done_before
    assert all(c.ok for c in again.cells)


_CRASHING_SWEEP = textwrap.dedent(
    """
    import sys
    from flux_nb.client import FluxClient
    from flux_nb.sweeps import sweep
    sweep("a crashing fox", steps=[1, 2, 3, 4, 5, 6], seed=3, concurrency=1,
          client=FluxClient(endpoint=sys.argv[1]), progress=False)
    """
)


def test_a_crashed_sweep_resumes_and_fetches_its_job_in_flight(live_server, client_for):
    server = live_server(workers=2, latency=0.4)
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_SWEEP, server.url])
    store = get_store()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(store.history()) >= 3 and store.pending()):
            time.sleep(0.02)
    finally:
        proc.kill()  # the kernel dies mid-sweep
        proc.wait(timeout=30)
    saved = len(store.history())
    in_flight = store.pending()
    assert saved >= 3
    client = client_for(server)
    result = sweep("a crashing fox", steps=[1, 2, 3, 4, 5, 6], seed=3, client=client, progress=False)
    assert all(c.ok for c in result.cells)
    assert [c.status for c in result.cells].count("cached") == saved
    # the job in flight at the crash was fetched, not paid for twice
    assert stats(server)["jobs"]["submitted"] == 6
    assert {c.result.request_id for c in result.cells} >= {j.request_id for j in in_flight}
    assert store.pending() == []


_CRASHING_GENERATE = textwrap.dedent(
    """
    import sys
    from flux_nb.client import FluxClient
    FluxClient(endpoint=sys.argv[1]).generate("a recovered fox", seed=5, image_size="square")
    """
)


def test_recover_fetches_journaled_jobs_by_request_id(live_server, client_for):
    server = live_server(workers=1, latency=1.0)
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_GENERATE, server.url])
    store = get_store()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not store.pending():
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    (job,) = store.pending()
    client = client_for(server)
    recovered = recover(client)
    assert len(recovered) == 1 and recovered[0].request_id == job.request_id
    assert recovered[0].images[0].path.is_file() and recovered[0].seed == 5
    assert store.pending() == [] and store.find_request_id(job.request_id) is not None
    assert stats(server)["jobs"]["submitted"] == 1
    assert recover(client) == []
    # and the cache now answers that request
    assert client.generate("a recovered fox", seed=5, image_size="square").cached


def test_grid_layout_labels_and_failed_tiles(live_server, client_for):
    engine = FlakyEngine()
    server = live_server(engine=engine, workers=4)
    result = sweep(["a fox", "a FAIL fox"], steps=[2, 3, 4], seed=1, image_size="square",
                   client=client_for(server), progress=False)
    thumb = 128
    sheet = result.grid(thumb=thumb).convert("RGB")
    width, height = sheet.size
    # 2 columns (prompt), 3 rows (steps), plus a header band and a label column
    assert 2 * thumb < width < 2 * thumb + 2 * thumb
    assert 3 * thumb < height < 3 * thumb + thumb
    # headers hold text: dark pixels above the first tile row
    header = sheet.crop((width - 2 * thumb, 0, width, height - 3 * thumb - 8))
    assert min(lo for lo, _ in header.getextrema()) < 100
    # the failed column (x = 2nd prompt) is drawn in the failure colour
    failed_tile = sheet.crop((width - thumb // 2 - 4, height - thumb // 2 - 4, width - thumb // 2 + 4, height - thumb // 2 + 4))
    r, g, b = failed_tile.convert("RGB").getpixel((0, 0))
    assert r > 240 and g < 235
    swapped = result.grid(x="steps", y="prompt", thumb=thumb)
    assert swapped.size[0] > 3 * thumb and swapped.size[1] < 3 * thumb
    with pytest.raises(ValueError, match="no axis"):
        result.grid(x="nope")
    import matplotlib.figure

    figure = result.figure()
    assert isinstance(figure, matplotlib.figure.Figure)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    assert titles == ["prompt: a fox", "prompt: a FAIL fox"] and labels == ["steps: 2", "steps: 3", "steps: 4"]


def test_z_axis_makes_sub_grids(live_server, client_for):
    server = live_server(workers=4)
    result = sweep("x", steps=[1, 2], guidance=[1, 2], seed=[1, 2], image_size="square",
                   client=client_for(server), progress=False)
    one = result.grid(z=[], thumb=64)  # z is filled from the remaining axes anyway
    flat = result.grid(x="steps", y="guidance", z="seed", thumb=64)
    assert one.size == flat.size and flat.size[1] > 4 * 64


def test_save_writes_images_with_metadata_grid_and_manifests(live_server, client_for, tmp_path):
    from flux_nb.metadata import read_metadata

    server = live_server(workers=4)
    result = sweep("a fox", guidance=[2, 5], seed=4, image_size="square", client=client_for(server), progress=False)
    paths = result.save(tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in paths)
    assert names == ["grid.png", "images/cell-0000-0.jpeg", "images/cell-0001-0.jpeg", "manifest.csv", "manifest.json"]
    request = read_metadata(tmp_path / "out" / "images" / "cell-0001-0.jpeg")
    assert request.guidance_scale == 5.0 and request.seed == 4 and request.prompt == "a fox"
    grid = Image.open(tmp_path / "out" / "grid.png")
    meta = json.loads(grid.text["flux_nb_sweep"])
    assert meta["axes"] == [{"name": "guidance_scale", "kind": "field", "values": [2.0, 5.0]}]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cells"][1]["files"] == ["images/cell-0001-0.jpeg"] and manifest["seed"] == 4
    csv_text = (tmp_path / "out" / "manifest.csv").read_text()
    assert csv_text.count("\n") == 3 and "guidance_scale" in csv_text.splitlines()[0]
    # real JSON values, not JSON strings inside JSON
    cell = manifest["cells"][1]
    assert cell["loras"] == [] and cell["nsfw"] == [False]
    assert isinstance(cell["timings"], dict) and isinstance(cell["timings"].get("inference"), (int, float))
    assert isinstance(cell["wall_time"], float) and 0 < cell["wall_time"] < 60
    import csv

    (row, _) = list(csv.DictReader(csv_text.splitlines()))
    assert json.loads(row["nsfw"]) == [False] and json.loads(row["loras"]) == []
    assert isinstance(json.loads(row["timings"]), dict) and float(row["wall_time"]) > 0
    # a cell from the cache was not sent: no wall time
    again = sweep("a fox", guidance=[2, 5], seed=4, image_size="square", client=client_for(server), progress=False)
    assert [r["wall_time"] for r in again.records()] == [None, None] and again.records()[0]["cached"]


def test_inline_display_stays_small_for_large_sweeps(live_server, client_for):
    server = live_server(workers=8)
    result = sweep("a fox", steps="1-10", guidance="1-10 [10]", seed=1, image_size="256x256",
                   client=client_for(server), progress=False, concurrency=16)
    assert len(result) == 100 and all(c.ok for c in result.cells)
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert len(bundle["text/html"]) < 400_000 and "showing 60 of 100 cells" in bundle["text/html"]


def test_journaled_jobs_are_settled_off_the_event_loop(live_server, data_dir, monkeypatch):
    """A dead process's expired job is dropped from the journal by a worker thread, never on the loop."""
    import asyncio

    import flux_nb.store as store_module
    from flux_nb.store import Store

    calls: list[tuple[str, bool]] = []

    def on_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    class RecordingStore(Store):
        def journal_done(self, request_id):
            calls.append(("journal_done", on_loop()))
            return super().journal_done(request_id)

        def find_request_id(self, request_id):
            calls.append(("find_request_id", on_loop()))
            return super().find_request_id(request_id)

    server = live_server(workers=2)
    store = RecordingStore(data_dir)
    request = FluxRequest("an expired fox", seed=4, image_size="square")
    with monkeypatch.context() as m:
        m.setattr(store_module, "_PROCESS_TOKEN", "a-dead-kernel")
        store.journal_submit(request, {
            "request_id": "gone-1", "endpoint": server.url, "backend": "endpoint",
            "status_url": f"{server.url}/fal-ai/flux-lora/requests/gone-1/status",
            "response_url": f"{server.url}/fal-ai/flux-lora/requests/gone-1",
            "cancel_url": f"{server.url}/fal-ai/flux-lora/requests/gone-1/cancel",
        })
    client = FluxClient(endpoint=server.url, store=store)
    try:
        result = sweep("an expired fox", seed=4, image_size="square", steps=[28], client=client, progress=False)
    finally:
        client.close()
    assert [c.status for c in result.cells] == ["done"]
    assert [j.request_id for j in store.pending()] == []  # the expired job was dropped
    assert ("journal_done", False) in calls and ("find_request_id", False) in calls
    assert not [name for name, looped in calls if looped]


def test_identical_cells_are_sent_once_and_share_the_result(live_server, client_for):
    server = live_server(workers=2)
    result = sweep("a twin fox", guidance=[2, 2, 3], steps=[4, 4], seed=6, image_size="square",
                   client=client_for(server), progress=False)
    assert len(result) == 6 and all(c.status == "done" for c in result.cells)
    assert stats(server)["jobs"]["submitted"] == 2  # 6 cells, 2 distinct requests
    ids = [c.result.request_id for c in result.cells]
    assert len(set(ids)) == 2 and ids[0] == ids[1] == ids[2] == ids[3]
    assert result.cells[0].thumbnail == result.cells[3].thumbnail
    assert "6 cell(s): 2 request(s)" in str(result.summary()) and "6 finished" in str(result.summary())


def test_deleted_store_files_fall_back_to_thumbnails_and_say_which_file(live_server, client_for, tmp_path):
    from flux_nb.errors import FluxStoreError

    server = live_server(workers=2)
    client = client_for(server)
    result = sweep("a vanishing fox", guidance=[2, 5], seed=8, image_size="square", client=client, progress=False)
    gone = result.cells[0].paths[0]
    gone.unlink()  # someone cleaned the data folder
    assert result.cells[0].files_missing == [gone] and result.cells[1].files_missing == []
    with pytest.raises(FluxStoreError) as info:
        result.cells[0].result
    assert str(gone) in str(info.value) and isinstance(info.value, OSError)
    assert result.cells[1].result.images[0].data  # the other cell is untouched
    sheet = result.grid(thumb=512)  # bigger than the thumbnails: the missing cell uses its thumbnail
    assert sheet.size[0] >= 2 * 512
    tile = result.cells[0].tile(512, 512)
    assert tile is not None and tile.size == (512, 512)
    result.figure()
    with pytest.warns(RuntimeWarning, match="no longer on disk"):
        written = result.save(tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert "images/cell-0001-0.jpeg" in names and "images/cell-0000-0.jpeg" not in names
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cells"][0]["files_missing"] == [str(gone)] and manifest["cells"][0]["files"] == []
    # the cache treats the missing files as a miss: the cell is made again, the other is cached
    again = sweep("a vanishing fox", guidance=[2, 5], seed=8, image_size="square", client=client, progress=False)
    assert [c.status for c in again.cells] == ["done", "cached"]


def test_the_cache_and_journal_are_checked_once_per_sweep_not_per_cell(live_server, data_dir):
    from collections import Counter

    from flux_nb.store import Store

    calls: Counter = Counter()

    class CountingStore(Store):
        def lookup(self, request, *, origin):
            calls["lookup"] += 1
            return super().lookup(request, origin=origin)

        def pending(self, request=None, *, include_own=True):
            calls["pending" if request is None else "pending(request)"] += 1
            return super().pending(request, include_own=include_own)

        def has_many(self, requests, *, origin):
            calls["has_many"] += 1
            return super().has_many(requests, origin=origin)

    server = live_server(workers=4)
    client = FluxClient(endpoint=server.url, store=CountingStore(data_dir))
    try:
        first = sweep("a counted fox", steps="1-8", seed=2, image_size="square", client=client, progress=False)
        assert all(c.status == "done" for c in first.cells)
        assert calls == {"has_many": 1, "pending": 1}  # no per-cell lookups for cells not in the cache
        calls.clear()
        again = sweep("a counted fox", steps="1-8", seed=2, image_size="square", client=client, progress=False)
        assert all(c.status == "cached" for c in again.cells)
        assert calls == {"has_many": 1, "pending": 1, "lookup": 8}  # one read per cached cell
    finally:
        client.close()


def _submit_journaled(client, request):
    """Submit a job and journal it as generate() does, as if the kernel then died before fetching it."""
    handle = client.submit(request)
    backend = client.aio.backend
    get_store().journal_submit(request, {**handle.to_dict(), "endpoint": backend.queue_url, "backend": backend.kind})
    return handle


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True, "4"])
@pytest.mark.timeout(60)
def test_recover_refuses_a_concurrency_that_is_not_a_positive_whole_number(live_server, client_for, concurrency):
    from flux_nb.errors import FluxValidationError

    server = live_server(workers=1)
    client = client_for(server)
    _submit_journaled(client, FluxRequest("a waiting fox", seed=3, image_size="square"))  # recover has work
    with pytest.raises(FluxValidationError) as info:
        recover(client, include_own=True, concurrency=concurrency)  # Semaphore(0) would wait forever
    assert info.value.errors[0].field == "concurrency" and "at least 1" in str(info.value)
    assert len(get_store().pending()) == 1


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:flux-nb could not save the images:UserWarning")  # the client's own warning
def test_recover_keeps_going_when_the_images_cannot_be_saved(live_server, client_for, data_dir):
    server = live_server(workers=2)
    client = client_for(server)
    for seed in (1, 2):
        _submit_journaled(client, FluxRequest("an unsaved fox", seed=seed, image_size="square"))
    # a file where the images folder should be: every save fails, while the journal still works
    (data_dir / "images").write_text("not a folder")
    with pytest.warns(RuntimeWarning):
        recovered = recover(client, include_own=True)
    # both jobs were fetched (their images are in memory) even though neither could be saved
    assert sorted(r.seed for r in recovered) == [1, 2]
    assert all(r.images[0].data and r.images[0].path is None for r in recovered)
    # the journal keeps them, so a later recover (with a working folder) can still save them
    assert len(get_store().pending()) == 2
    (data_dir / "images").unlink()
    again = recover(client, include_own=True)
    assert sorted(r.seed for r in again) == [1, 2] and all(r.images[0].path.is_file() for r in again)
    assert get_store().pending() == [] and stats(server)["jobs"]["submitted"] == 2


@pytest.mark.timeout(120)
def test_the_live_grid_is_drawn_off_the_event_loop(live_server, client_for, monkeypatch):
    import IPython.display

    from flux_nb.sweeps import runner
    from flux_nb.sweeps.result import SweepResult

    drawn_on: list[threading.Thread] = []
    updated_on: list[threading.Thread] = []
    updates: list[dict] = []
    real_bundle = SweepResult._repr_mimebundle_

    def recording_bundle(self, *args, **kwargs):
        drawn_on.append(threading.current_thread())
        return real_bundle(self, *args, **kwargs)

    class Handle:
        def update(self, bundle, raw=False):
            updated_on.append(threading.current_thread())
            updates.append(bundle)

    monkeypatch.setattr(SweepResult, "_repr_mimebundle_", recording_bundle)
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: Handle())
    monkeypatch.setattr(runner, "_in_notebook", lambda: True)
    monkeypatch.setattr(runner, "LIVE_INTERVAL", 0.0)  # redraw after every cell
    server = live_server(workers=2)
    result = sweep("a {red|blue} fox", guidance="2-4", seed=9, image_size="square",
                   client=client_for(server), progress=False, live=True)
    assert [c.status for c in result.cells] == ["done"] * 6
    loop_threads = set(updated_on)  # the display handle is only touched on the shared loop
    assert len(loop_threads) == 1 and len(drawn_on) >= 2
    assert not loop_threads & set(drawn_on)  # the grid (thumbnails + JPEG) is never drawn on the loop
    assert list(updates[-1]) == ["text/plain"] and "sweep finished" in updates[-1]["text/plain"]
