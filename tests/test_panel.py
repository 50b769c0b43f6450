"""The control panel, driven without a browser: set widget values, click buttons, wait.

Generations go through the real client to the real embedded preview server (or, for cancel and
queueing, a real server on a loopback port with simulated latency).
"""

from __future__ import annotations

import ast
import socket

import httpx
import ipywidgets as widgets
import pytest

from flux_nb.client import FluxClient
from flux_nb.errors import FluxConnectionError, FluxValidationError
from flux_nb.panel import HistoryEntry, Panel, PanelHistoryEntry
from flux_nb import magic_args
from flux_nb.magic_args import cell_template
from flux_nb.panel.code import describe_error, field_label, python_code
from flux_nb.params import FluxRequest, ImageSize, LoraWeight
from flux_nb.protocol import RetryPolicy

WAIT = 60  # generous: 2 shared cores


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("FLUX_NB_DATA_DIR", str(tmp_path / "data"))
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUX_NB_ENDPOINT", "FLUX_NB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client():
    c = FluxClient()  # embedded preview server, in-process
    yield c
    c.close()


@pytest.fixture
def panel(client):
    p = Panel(client=client)
    yield p
    p.cancel()
    p.wait(WAIT)
    p.close()


def test_generate_fills_grid_and_history(panel):
    seen = []
    panel.on_result(seen.append)
    panel.prompt.value = "a red fox in snow"
    panel.num_images.value = 2
    panel.randomize.value = False
    panel.seed.value = 7
    panel.generate_button.click()
    result = panel.wait(WAIT)

    assert result is not None and len(result.images) == 2
    assert seen == [result]
    assert result.seed == 7 and result.request.prompt == "a red fox in snow"
    thumbs = panel.grid.images
    assert len(thumbs) == 2
    assert all(t.format == "jpeg" and t.value[:2] == b"\xff\xd8" for t in thumbs)
    assert "flux-nb-grid" in panel.grid._dom_classes
    assert len(panel.history) == 1 and len(panel.history_strip.buttons) == 1
    assert panel.status.startswith("Done") and "seed 7" in panel.status
    assert not panel.busy and panel.error is None


def test_random_seed_is_reported_and_put_in_the_seed_box(panel):
    panel.prompt.value = "a lighthouse"
    assert panel.randomize.value and panel.request().seed is None
    assert panel.seed.disabled  # in sync from the start, not only after the box is toggled
    panel.generate()
    result = panel.wait(WAIT)
    assert isinstance(result.seed, int)
    assert f"seed {result.seed}" in panel.status
    assert panel.seed.value == result.seed and panel.randomize.value  # still random for the next run
    panel.randomize.value = False
    assert not panel.seed.disabled
    assert panel.request() == result.reproduce_request  # un-ticking reproduces the image


def test_grid_captions_name_the_requests_seed_and_image_number(panel):
    panel.prompt.value = "two foxes"
    panel.num_images.value = 2
    panel.randomize.value = False
    panel.seed.value = 7
    panel.generate()
    panel.wait(WAIT)
    captions = [w.value for cell in panel.grid.children for w in cell.children if isinstance(w, widgets.HTML)]
    assert [c.split(" · ")[0] for c in captions] == ["<small>seed 7 #1/2", "<small>seed 7 #2/2"]


def test_thumbnails_are_decoded_off_the_event_loop(panel, monkeypatch):
    import threading

    from flux_nb import render

    threads = []
    real = render._decode

    def spy(data, longest):
        threads.append(threading.current_thread().name)
        return real(data, longest)

    monkeypatch.setattr(render, "_decode", spy)
    panel.prompt.value = "a slow decode"
    panel.num_images.value = 2
    panel.generate()
    panel.wait(WAIT)
    assert len(panel.grid.images) == 2 and len(panel.history_strip.buttons) == 1
    assert threads and "flux-nb-loop" not in threads, threads


def test_several_generations_queue_in_order(panel):
    panel.randomize.value = False
    prompts = ["first", "second", "third"]
    for i, prompt in enumerate(prompts):
        panel.prompt.value = prompt
        panel.seed.value = 100 + i
        panel.generate_button.click()
    panel.wait(WAIT)
    assert [e.request.prompt for e in panel.history] == prompts
    assert [e.index for e in panel.history] == [1, 2, 3]
    # the strip shows newest first
    assert [b.description for b in panel.history_strip.buttons] == ["#3", "#2", "#1"]


def test_restore_puts_settings_back(panel):
    panel.prompt.value = "a castle"
    panel.size.value = "custom"
    panel.width.value, panel.height.value = 512, 384
    panel.steps.value = 12
    panel.guidance.value = 7.5
    panel.output_format.value = "png"
    panel.safety.value = False
    panel.generate()
    panel.wait(WAIT)
    first = panel.history[0]

    panel.prompt.value = "something else"
    panel.size.value = "square"
    panel.steps.value = 30
    panel.generate()
    panel.wait(WAIT)
    assert panel.request().prompt == "something else"

    panel.history_strip.buttons[-1].click()  # the oldest entry
    restored = panel.request()
    assert restored == first.request.replace(seed=first.result.seed)
    assert not panel.randomize.value and panel.seed.value == first.result.seed
    assert panel.size.value == "custom" and panel.custom_size.layout.display is None
    assert "Restored" in panel.status

    panel.restore(2)
    assert panel.request().prompt == "something else"
    with pytest.raises(IndexError):
        panel.restore(9)


def test_restore_from_request_and_result(panel):
    request = FluxRequest("a boat", image_size="portrait_16_9", steps=5, seed=3, loras=[{"path": "a/b", "scale": 0.5}])
    panel.restore(request)
    assert panel.request() == request
    assert [row.path.value for row in panel.loras.rows] == ["a/b"]


def test_invalid_settings_named_in_status(panel):
    errors = []
    panel.on_error(errors.append)
    panel.prompt.value = "   "
    assert panel.generate() is None
    assert "Prompt" in panel.status and "non-empty" in panel.status
    assert isinstance(errors[0], FluxValidationError)

    panel.prompt.value = "ok"
    panel.randomize.value = False
    panel.seed.value = -5
    panel.generate()
    assert "Seed (-5)" in panel.status
    assert not panel.busy


def test_lora_editor_rows(panel):
    panel.prompt.value = "x"
    row = panel.loras.add("https://example.test/style.safetensors", 0.8)
    panel.loras.add("", 1.0)  # an empty row is ignored
    panel.loras.add("owner/repo", -0.5)
    assert panel.request().loras == (LoraWeight("https://example.test/style.safetensors", 0.8), LoraWeight("owner/repo", -0.5))
    row.remove_button.click()
    assert panel.request().loras == (LoraWeight("owner/repo", -0.5),)
    assert len(panel.loras.children) == 3  # two rows + the add button
    panel.loras.add_button.click()
    assert len(panel.loras.rows) == 3


def test_custom_size_controls(panel):
    panel.prompt.value = "x"
    assert panel.custom_size.layout.display == "none"
    panel.size.value = "custom"
    assert panel.custom_size.layout.display is None
    panel.width.value, panel.height.value = 1280, 720
    assert panel.request().image_size == ImageSize(1280, 720)
    panel.size.value = "square"
    assert panel.request().image_size == "square"
    assert (panel.width.value, panel.height.value) == (512, 512)


def test_defaults_are_validated():
    p = Panel(prompt="a cat", size="square_hd", steps=10, guidance=2.0, n=3, seed=11, format="png")
    assert p.request() == FluxRequest("a cat", image_size="square_hd", steps=10, guidance=2.0, n=3, seed=11, format="png")
    assert not p.randomize.value
    assert Panel().prompt.value == ""
    assert Panel(prompt="").prompt.value == ""
    assert Panel(prompt=None).prompt.value == ""
    assert Panel().seed.disabled and not p.seed.disabled
    with pytest.raises(FluxValidationError) as info:
        Panel(stpes=3)
    assert "num_inference_steps" in str(info.value)


def _python_call_request(code: str) -> FluxRequest:
    """The request a ``flux_nb.generate(...)`` snippet would send (literals only, no eval)."""
    call = next(node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call))
    assert ast.unparse(call.func) == "flux_nb.generate"
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return FluxRequest(*args, **kwargs)


def test_copy_as_code_python_round_trip(panel):
    panel.prompt.value = 'a "quoted" prompt\nwith two lines'
    panel.size.value = "custom"
    panel.width.value, panel.height.value = 1280, 720
    panel.steps.value = 9
    panel.guidance.value = 4.2
    panel.num_images.value = 3
    panel.randomize.value = False
    panel.seed.value = 1234
    panel.loras.add("my lora.safetensors", 0.75)
    panel.safety.value = False
    panel.output_format.value = "png"
    magic, python = panel.code()
    assert _python_call_request(python) == panel.request()
    assert magic.startswith("%%flux ") and "--no-safety" in magic and "-s 1234" in magic

    panel.code_toggle.value = True
    assert panel.code_area.layout.display is None
    assert magic in panel.code_area.value and python in panel.code_area.value
    panel.steps.value = 10  # the shown code follows the controls
    assert "--steps 10" in panel.code_area.value
    panel.code_toggle.value = False
    assert panel.code_area.layout.display == "none"


def test_copy_as_code_magic_round_trip(panel):
    panel.prompt.value = "a fox's den, at dusk, {{ not a variable }}"
    panel.size.value = "portrait_4_3"
    panel.randomize.value = False
    panel.seed.value = 5
    panel.loras.add("/tmp/my lora.safetensors", 0.5)
    panel.output_format.value = "png"
    magic, _ = panel.code()
    first, body = magic.split("\n", 1)
    line = first[len("%%flux"):].strip()
    options = magic_args.parse_options(line)
    assert not options.is_sweep
    assert FluxRequest(magic_args.interpolate(body, {}), **options.fields) == panel.request()
    assert magic == cell_template(panel.request())  # the same text %flux load prints


def test_connection_error_in_plain_words(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    dead = FluxClient(endpoint=f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=1))
    try:
        p = Panel(client=dead, prompt="x")
        errors = []
        p.on_error(errors.append)
        p.generate()
        p.wait(WAIT)
        assert p.status.startswith("#1 failed: Could not reach the server")
        assert isinstance(errors[0], FluxConnectionError) and p.error is errors[0]
        assert p.result is None and not p.history
    finally:
        dead.close()


def test_cancel_running_and_queued_on_server(live_server):
    server = live_server(latency=2.0)
    client = FluxClient(endpoint=server.url)
    try:
        p = Panel(client=client, prompt="slow one")
        p.generate()
        # generate() returned while the job runs: the kernel is never blocked
        assert p.busy and p.result is None
        p.prompt.value = "waiting one"
        p.generate_button.click()
        assert "Queued #" in p.status
        _wait_for(lambda: "generating ·" in p.status)  # the server reported it running
        assert p.cancel() == 2
        p.wait(WAIT)
        assert "cancelled" in p.status.lower()
        assert not p.history and not p.busy
        _wait_for(lambda: _jobs(server)["cancelled"] >= 1)
        jobs = _jobs(server)
        assert jobs["submitted"] == 1  # the queued one was never sent
        assert jobs["completed"] == 0
    finally:
        client.close()


def _stats(server) -> dict:
    return httpx.get(f"{server.url}/stats").json()


def _jobs(server) -> dict:
    return _stats(server)["jobs"]


def _wait_for(predicate, timeout=WAIT):
    import time

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_cancel_with_nothing_running(panel):
    assert panel.cancel() == 0
    assert panel.status == "Nothing to cancel."


def test_cancel_button_is_live_only_while_busy(panel):
    assert panel.cancel_button.disabled
    panel.busy = True
    assert not panel.cancel_button.disabled
    panel.busy = False
    assert panel.cancel_button.disabled


def test_sweep_tab_estimate_and_run(panel):
    panel.prompt.value = "a tree"
    panel.size.value = "square"
    panel.steps.value = 4
    panel.randomize.value = False
    panel.seed.value = 3
    tab = panel.sweep_tab
    tab.x_axis.value = "guidance_scale"
    tab.x_values.value = "2-6 [3]"
    tab.y_axis.value = "num_inference_steps"
    tab.y_values.value = "2,4"
    cost = tab.estimate()
    assert (cost.cells, cost.requests, cost.images, cost.megapixels) == (6, 6, 6, 6)
    assert cost.cost == pytest.approx(0.21)
    assert "6 request(s)" in tab.cost_line.value
    assert tab.run()
    panel.wait(WAIT)
    assert panel.status.startswith("Sweep done: 6 cell(s)")
    assert len(panel.grid.images) == 1
    assert len(tab.sweep_result.cells) == 6


def _sweep_panel(client) -> Panel:
    p = Panel(client=client, prompt="a tree", size="square", steps=4, seed=3)
    p.sweep_tab.x_axis.value = "guidance_scale"
    p.sweep_tab.x_values.value = "1-6 [6]"
    return p


def test_sweep_tab_uses_the_panels_client_quietly(live_server, capfd):
    server = live_server()
    client = FluxClient(endpoint=server.url)  # not the default (embedded) client
    try:
        p = _sweep_panel(client)
        p.sweep_tab.x_values.value = "2,3"
        assert p.sweep_tab.run()
        p.wait(WAIT)
        assert p.status.startswith("Sweep done: 2 cell(s)"), p.status
        assert _jobs(server)["completed"] == 2
        out, err = capfd.readouterr()
        assert "cell" not in out + err and "%|" not in out + err  # no tqdm bar from the loop thread
    finally:
        client.close()


def test_sweep_counts_cells_and_ignores_changes_made_while_it_runs(live_server):
    server = live_server(latency=0.3, workers=1)
    client = FluxClient(endpoint=server.url)
    try:
        p = _sweep_panel(client)
        tab = p.sweep_tab
        tab.x_values.value = "1,2,3"
        seen = []
        p.observe(lambda change: seen.append(change["new"]), "status")
        assert tab.run()
        assert tab.running and p.busy
        # the controls change mid-run: the sweep and its grid keep what Run saw
        tab.x_axis.value = "num_inference_steps"
        tab.x_values.value = "7,8"
        p.steps.value = 9
        p.wait(WAIT)
        assert p.status.startswith("Sweep done: 3 cell(s)"), p.status
        result = tab.sweep_result
        assert [a.name for a in result.axes] == ["guidance_scale"] and len(result.cells) == 3
        assert {c.request.num_inference_steps for c in result.cells} == {4}
        assert "sweep over guidance_scale" in p.grid.children[0].children[1].value
        assert any("1 of 3 cells done" in text for text in seen), seen
        assert any("2 of 3 cells done" in text for text in seen), seen
    finally:
        client.close()


def test_cancel_stops_a_running_sweep_on_the_server_and_keeps_finished_cells(live_server):
    server = live_server(latency=0.5, workers=1)
    client = FluxClient(endpoint=server.url)
    try:
        p = _sweep_panel(client)
        tab = p.sweep_tab
        assert tab.run()
        _wait_for(lambda: "1 of 6 cells done" in p.status)  # one cell is back, the rest queued
        assert p.cancel() >= 1
        assert tab.wait(WAIT)
        assert "cancelled" in p.status.lower(), p.status
        assert not p.busy and not tab.running
        _wait_for(lambda: _jobs(server)["cancelled"] >= 1)
        jobs = _jobs(server)
        assert jobs["completed"] < 6
        statuses = [c.status for c in tab.sweep_result.cells]
        # a job the server finished while the cancel was on its way counts there but was not fetched
        assert 1 <= statuses.count("done") <= jobs["completed"] and "cancelled" in statuses
        assert f"{statuses.count('done')} of 6 cells" in p.status
        assert len(p.grid.images) == 1  # the finished cells' grid
        assert tab.cancel() == 0  # nothing left to cancel
    finally:
        client.close()


def test_sweep_estimate_works_in_a_fresh_process(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from flux_nb import Panel; p = Panel(prompt='a fox'); cost = p.sweep_tab.estimate(); "
            "assert cost is not None, p.status; print(cost.requests, p.sweep_tab.cost_line.value)")
    env = {**os.environ, "FLUX_NB_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 3 cell(s): 3 request(s)"), done.stdout


def test_sweep_axes_must_differ(panel):
    panel.prompt.value = "x"
    tab = panel.sweep_tab
    tab.y_axis.value = tab.x_axis.value
    tab.y_values.value = "1,2"
    with pytest.raises(FluxValidationError):
        tab.axes()


# -- pure helpers ------------------------------------------------------------------------------


def test_field_labels():
    assert field_label("num_inference_steps") == "Steps"
    assert field_label("image_size.width") == "Width"
    assert field_label("loras.0.scale") == "LoRA 1 scale"
    assert field_label("loras.2") == "LoRA 3"
    assert field_label("other") == "other"


def test_describe_error_names_fields():
    try:
        FluxRequest("", steps=0, loras=[{"path": "a", "scale": 9}])
    except FluxValidationError as exc:
        text = describe_error(exc)
    assert text.startswith("Check the settings:")
    assert "Prompt (empty)" in text and "Steps (0)" in text and "LoRA 1 scale (9)" in text


def test_code_snippets_for_defaults():
    request = FluxRequest("hello")
    assert cell_template(request) == "%%flux --size landscape_4_3 --steps 28 -g 3.5 -n 1 --format jpeg --safety\nhello"
    assert _python_call_request(python_code(request)) == request


def test_history_entry_reproduces_seed():
    request = FluxRequest("a")

    class R:
        seed = 99

    assert PanelHistoryEntry(1, request, R()).reproduce_request.seed == 99
    assert HistoryEntry is PanelHistoryEntry  # the old name still works


def test_panel_history_entries_are_panel_history_entries(panel):
    import flux_nb.store

    panel.prompt.value = "a fox"
    panel.generate()
    panel.wait(WAIT)
    assert [type(e) for e in panel.history] == [PanelHistoryEntry]
    assert PanelHistoryEntry is not flux_nb.store.HistoryEntry and PanelHistoryEntry.__name__ == "PanelHistoryEntry"


def test_acceleration_and_sync_mode_are_kept(client):
    p = Panel(client=client, prompt="a fox", acceleration="regular", sync_mode=True)
    try:
        request = p.request()
        assert request.acceleration == "regular" and request.sync_mode is True
        magic, python = p.code()
        assert "--acceleration regular" in magic and "--sync" in magic
        assert _python_call_request(python) == request
        p.restore(FluxRequest("plain"))
        assert p.request().acceleration == "none" and p.request().sync_mode is False
        p.restore(FluxRequest("fast", acceleration="regular"))
        assert p.request().acceleration == "regular"
    finally:
        p.close()


def test_removing_a_lora_row_closes_its_widgets(panel):
    row = panel.loras.add("a.safetensors", 0.5)
    parts = [row.path, row.scale, row.remove_button]
    assert all(w.comm is not None for w in parts)
    row.remove_button.click()
    assert row.comm is None and all(w.comm is None for w in parts)
    row = panel.loras.add("b.safetensors")
    parts = [row.path, row.scale, row.remove_button]
    panel.loras.set([])  # replacing every row closes them too
    assert all(w.comm is None for w in parts)


def test_sweep_estimate_counts_duplicate_cells_once(panel):
    panel.prompt.value = "a tree"
    panel.size.value = "square"
    panel.steps.value = 4
    panel.randomize.value = False
    panel.seed.value = 3
    tab = panel.sweep_tab
    tab.x_axis.value = "guidance_scale"
    tab.x_values.value = "2,2,3"
    cost = tab.estimate()
    assert (cost.cells, cost.requests, cost.images) == (3, 2, 2)
    assert "3 cell(s): 2 request(s)" in tab.cost_line.value
