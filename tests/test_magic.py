"""The %%flux / %flux magics in a real IPython InteractiveShell, against the embedded local server."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import flux_nb
from flux_nb import client as client_module
from flux_nb import render
from flux_nb.magic_args import (
    MagicUsageError,
    cell_template,
    check_no_secret,
    escape_prompt,
    interpolate,
    parse_lora,
    parse_options,
    split_capture,
)
from flux_nb.metadata import read_metadata
from flux_nb.params import FluxRequest
from flux_nb.result import FluxResult
from flux_nb.sweeps.plan import parse_axis_values  # also keeps the real plan loaded when sweep() is faked


@pytest.fixture
def ip(monkeypatch):
    shell = InteractiveShell.instance()
    with capture_output():
        shell.run_line_magic("load_ext", "flux_nb")
    shell.config.pop("FluxMagics", None)  # %config settings of earlier tests
    flux_nb.load_ipython_extension(shell)  # a fresh FluxMagics (default settings) for every test
    # record the variables the magic may set, so they are restored afterwards
    for name in ("FLUX_NB_ENDPOINT", "FAL_KEY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    yield shell
    shell.config.pop("FluxMagics", None)
    for name in ("res", "_flux_request", "animal", "hist"):
        shell.user_ns.pop(name, None)
    client_module.get_client().close()
    client_module.reset_default_client()
    render.configure(thumbnail_size=256)


def magics(shell):
    return next(c for c in shell.configurables if type(c).__name__ == "FluxMagics")


def run(shell, cell: str):
    """Run a cell; return (execution result, stdout, stderr, display outputs)."""
    with capture_output() as captured:
        result = shell.run_cell(cell)
    return result, captured.stdout, captured.stderr, captured.outputs


def assert_one_line_error(result, stdout, stderr, *needles):
    assert result.error_in_exec is None and result.result is None
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith("flux: ") and lines[1].startswith("usage: %%flux")
    for needle in needles:
        assert needle in lines[0]


# -- pure parsing ---------------------------------------------------------------------------------


def test_split_capture():
    assert split_capture("res << --steps 4") == ("res", " --steps 4")
    assert split_capture("  out<<") == ("out", "")
    assert split_capture("--steps 4") == (None, "--steps 4")
    with pytest.raises(MagicUsageError, match="keyword"):
        split_capture("class << -n 2")


def test_interpolate_variables_and_leaves_variants():
    ns = {"animal": "fox", "n": 3, "obj": types.SimpleNamespace(colour="red")}
    assert interpolate("a {{animal}} and {{ n }} {{ obj.colour }} {cat|dog}", ns) == "a fox and 3 red {cat|dog}"
    with pytest.raises(MagicUsageError, match="unknown variable 'missing'"):
        interpolate("a {{ missing }}", ns)
    with pytest.raises(MagicUsageError, match="only a variable name"):
        interpolate("a {{ n + 1 }}", ns)
    with pytest.raises(MagicUsageError, match="no attribute 'size'"):
        interpolate("{{ obj.size }}", ns)


def test_backslash_escapes_a_literal_double_brace():
    ns = {"animal": "fox"}
    assert interpolate(r"a \{{ animal }} and {{ animal }}", ns) == "a {{ animal }} and fox"
    assert interpolate(r"\{{ n + 1 }}", ns) == "{{ n + 1 }}"  # escaped: not checked as a variable
    assert interpolate(r"a \\{{ animal }}", ns) == r"a \{{ animal }}"  # one backslash is consumed
    for prompt in ["{{ x }}", "{{{x}}}", r"\{{", "a {{{{ b", "{a|b} {{ c.d }} 'q' \"q\""]:
        assert interpolate(escape_prompt(prompt), {}) == prompt


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://h.example/lora.safetensors", {"path": "https://h.example/lora.safetensors", "scale": 1.0}),
        ("https://h.example:8080/l.safetensors:0.6", {"path": "https://h.example:8080/l.safetensors", "scale": 0.6}),
        ("C:/loras/x.safetensors:-1", {"path": "C:/loras/x.safetensors", "scale": -1.0}),
        ("org/repo", {"path": "org/repo", "scale": 1.0}),
    ],
)
def test_parse_lora_splits_on_last_colon_only_before_a_number(text, expected):
    assert parse_lora(text) == expected


def test_parse_every_option():
    opts = parse_options(
        "--size 1280x720 --steps 4 -g 2.5 -n 2 -s 7 --lora 'my lora.safetensors:0.5' --lora org/repo "
        "--format png --no-safety --sync --acceleration regular --save 'my out' --no-cache"
    )
    assert opts.fields == {
        "image_size": "1280x720", "num_inference_steps": 4, "guidance_scale": 2.5, "num_images": 2, "seed": 7,
        "loras": [{"path": "my lora.safetensors", "scale": 0.5}, {"path": "org/repo", "scale": 1.0}],
        "output_format": "png", "enable_safety_checker": False, "sync_mode": True, "acceleration": "regular",
    }
    assert opts.save == "my out" and opts.cache is False and not opts.is_sweep


def test_parse_sweep_axes_with_spaces():
    opts = parse_options("-x guidance=2-6 [5] -y steps=10-40 (+10) -z size=square,landscape_16_9 --dry-run --vary-seed")
    assert list(opts.axes.items()) == [("guidance", "2-6 [5]"), ("steps", "10-40 (+10)"), ("size", "square,landscape_16_9")]
    assert opts.is_sweep and opts.dry_run and opts.vary_seed
    assert parse_axis_values("guidance", "2-6 [5]") == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert parse_axis_values("size", "square, landscape_16_9") == ["square", "landscape_16_9"]
    assert parse_axis_values("lora", "none,a.safetensors") == [None, "a.safetensors"]
    with pytest.raises(MagicUsageError, match="already -x"):
        parse_options("-x steps=1,2 -y num_inference_steps=3,4")
    with pytest.raises(MagicUsageError, match="swept"):
        parse_options("-x guidance=1,2 -g 3")


@pytest.mark.parametrize(
    "line", ["--key abc", "--fal-key=abc", "--api-key abc", "FAL_KEY=abc", "-n 2 FAL_KEY_SECRET=x", "--token t"]
)
def test_keys_on_the_line_are_refused(line):
    with pytest.raises(MagicUsageError, match="%flux login") as info:
        check_no_secret(line)
    assert "abc" not in str(info.value)


def test_cell_template_round_trips():
    request = FluxRequest("a fox's den, at dusk", size="640x480", steps=12, guidance=2.5, seed=9, n=2,
                          loras=[{"path": "/tmp/my lora.safetensors", "scale": 0.5}], output_format="png",
                          enable_safety_checker=False, acceleration="regular")
    first, body = cell_template(request).split("\n", 1)
    opts = parse_options(first[len("%%flux"):])
    assert FluxRequest(body, **opts.fields) == request


def test_cell_template_writes_every_field_a_default_could_change():
    first = cell_template(FluxRequest("a fox")).split("\n", 1)[0]
    assert first == "%%flux --size landscape_4_3 --steps 28 -g 3.5 -n 1 --format jpeg --safety"
    opts = parse_options(first[len("%%flux"):])
    assert set(opts.fields) == {"image_size", "num_inference_steps", "guidance_scale", "num_images",
                                "output_format", "enable_safety_checker"}


@pytest.mark.parametrize(
    "prompt",
    ["a {{ x }} in snow", "a {red|blue} car, {{literal}}", "a fox's \"den\", at dusk", "{{{ x }}} \\{{ y }}"],
)
def test_emitted_cell_gives_back_the_same_request_through_the_magic(ip, prompt):
    request = FluxRequest(prompt, size="320x240", steps=1, guidance=2.5, seed=4, n=2, output_format="png",
                          enable_safety_checker=False, loras=[{"path": "https://h.example/it's a lora.safetensors", "scale": 0.5}])
    run(ip, "%config FluxMagics.num_images = 3")  # defaults must not leak into the emitted cell
    run(ip, "%config FluxMagics.enable_safety_checker = True")
    run(ip, "%config FluxMagics.output_format = 'jpeg'")
    result, stdout, stderr, _ = run(ip, cell_template(request))
    assert isinstance(result.result, FluxResult), stderr
    assert result.result.request == request


# -- the magic in a shell -------------------------------------------------------------------------


def test_load_ext_registers_line_and_cell_magic(ip):
    assert "flux" in ip.magics_manager.magics["cell"] and "flux" in ip.magics_manager.magics["line"]


def test_cell_generates_and_returns_result(ip):
    result, stdout, stderr, _ = run(ip, "%%flux --steps 3 -s 11 -n 2 --size 320x240\na red fox in snow")
    value = result.result
    assert isinstance(value, FluxResult) and len(value) == 2
    assert value.seed == 11 and value.request.num_inference_steps == 3
    assert (value.images[0].width, value.images[0].height) == (320, 240)
    assert ip.user_ns["_"] is value  # also the cell's value
    assert "Traceback" not in stdout + stderr


def test_every_field_option_reaches_the_request(ip):
    result, *_ = run(
        ip,
        "%%flux --size square -g 7.5 --steps 2 -s 3 --format png --no-safety --acceleration regular\n"
        "a lighthouse",
    )
    request = result.result.request
    assert (request.image_size, request.guidance_scale, request.num_inference_steps, request.seed) == ("square", 7.5, 2, 3)
    assert request.output_format == "png" and request.enable_safety_checker is False
    assert request.acceleration == "regular"
    assert result.result.images[0].content_type == "image/png"


def test_capture_is_quiet_and_interpolates(ip):
    ip.user_ns["animal"] = "heron"
    result, stdout, _, outputs = run(ip, "%%flux res << --steps 2 -s 4\na {{ animal }} at dawn, {misty|clear}")
    assert result.result is None and outputs == [] and stdout == ""
    res = ip.user_ns["res"]
    assert res.prompt == "a heron at dawn, {misty|clear}"


def test_line_magic_prompt_and_capture(ip):
    result, *_ = run(ip, "%flux res << a small boat --steps 2 -s 8")
    assert result.result is None and ip.user_ns["res"].prompt == "a small boat"
    result, *_ = run(ip, "%flux 'a quoted, prompt' -s 1 --steps 1")
    assert result.result.prompt == "a quoted, prompt"


def test_config_traitlets_change_defaults(ip):
    run(ip, "%config FluxMagics.num_inference_steps = 5")
    run(ip, "%config FluxMagics.image_size = '256x256'")
    run(ip, "%config FluxMagics.guidance_scale = 6.0")
    run(ip, "%config FluxMagics.output_format = 'png'")
    run(ip, "%config FluxMagics.thumbnail_size = 96")
    result, *_ = run(ip, "%%flux -s 2\na kite")
    request = result.result.request
    assert (request.num_inference_steps, request.size, request.guidance_scale, request.output_format) == (5, (256, 256), 6.0, "png")
    assert render.options().thumbnail_size == 96
    _, stdout, _, _ = run(ip, "%flux config")
    assert "num_inference_steps=5" in stdout and "embedded local server" in stdout
    assert "data folder:" in stdout


def test_config_rejects_out_of_range_defaults(ip, caplog):
    run(ip, "%config FluxMagics.num_inference_steps = 99")  # %config logs a TraitError as one line
    assert "FluxMagics.num_inference_steps=99: must be from 1 to 50" in caplog.text
    assert magics(ip).num_inference_steps == 28


def test_data_dir_and_endpoint_traitlets_set_the_environment(ip, tmp_path, live_server, monkeypatch):
    server = live_server()
    run(ip, f"%config FluxMagics.data_dir = '{tmp_path / 'mine'}'")
    assert os.environ["FLUX_NB_DATA_DIR"] == str(tmp_path / "mine")
    run(ip, f"%config FluxMagics.endpoint = '{server.url}'")
    _, stdout, _, _ = run(ip, "%flux config")
    assert server.url in stdout and str(tmp_path / "mine") in stdout
    result, *_ = run(ip, "%%flux --steps 1 -s 1\na pier")
    assert isinstance(result.result, FluxResult)
    assert httpx.get(f"{server.url}/stats").json()["jobs"]["completed"] == 1


@pytest.mark.parametrize(
    "cell, needles",
    [
        ("%%flux --steps 99\na fox", ["num_inference_steps=99", "1 to 50"]),
        ("%%flux --steps many\na fox", ["--steps", "'many'"]),
        ("%%flux --bogus\na fox", ["--bogus"]),
        ("%%flux --size huge\na fox", ["image_size='huge'"]),
        ("%%flux -n 9 -g 50\na fox", ["num_images=9", "guidance_scale=50"]),
        ("%%flux --format gif\na fox", ["output_format='gif'", "jpeg, png"]),
        ("%%flux --lora x.safetensors:9\na fox", ["loras.0.scale=9.0"]),
        ("%%flux\na {{ nowhere }}", ["unknown variable 'nowhere'"]),
        ("%%flux\n   \n", ["the cell is empty"]),
        ("%%flux extra words\na fox", ["'extra words'", "cell body"]),
        ("%%flux --key sk-123\na fox", ["%flux login"]),
        ("%%flux 'unclosed\na fox", ["No closing quotation"]),
        ("%%flux -x guidance\na fox", ["AXIS=VALUES"]),
        ("%flux", ["no prompt"]),
        ("%flux config now", ["takes no arguments"]),
        ("%flux load", ["%flux load PATH"]),
        ("%flux load /no/such/file.png", ["no such file: /no/such/file.png"]),
        ("%flux history 0", ["N must be at least 1"]),
        ("%flux history -1", ["N must be at least 1"]),
        ("%flux -x guidance=2-6 [5] a fox", ["quote sweep values", '-x "guidance=2-6 [5]"']),
        ("%%flux --max-cells 0 -x seed=1,2\na fox", ["--max-cells 0", "at least 1"]),
    ],
)
def test_usage_errors_print_one_line_and_usage(ip, cell, needles):
    result, stdout, stderr, _ = run(ip, cell)
    assert_one_line_error(result, stdout, stderr, *needles)
    assert "sk-123" not in stdout + stderr


def test_server_errors_print_one_line_without_usage(ip, live_server):
    server = live_server(max_pixels=512 * 512)  # the server refuses bigger images with a 422
    run(ip, f"%config FluxMagics.endpoint = '{server.url}'")
    result, stdout, stderr, _ = run(ip, "%%flux --steps 1 --size square_hd\na fox")
    assert result.error_in_exec is None and "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("flux: ") and "image_size" in lines[-1] and "usage:" not in stderr


def test_save_option_writes_files_with_metadata(ip, tmp_path):
    out = tmp_path / "my out"
    result, stdout, _, _ = run(ip, f"%%flux --steps 2 -s 6 -n 2 --save '{out}'\na red barn")
    files = sorted(out.iterdir())
    assert len(files) == 3 and "saved 2 image(s)" in stdout
    image = next(p for p in files if p.suffix == ".jpg")
    assert read_metadata(image) == result.result.reproduce_request


def test_load_shows_the_reproducing_cell(ip, tmp_path):
    run(ip, "%%flux res << --steps 2 -s 13 -g 4\na windmill")
    paths = ip.user_ns["res"].save(tmp_path)
    result, stdout, _, _ = run(ip, f"%flux load '{paths[0]}'")
    assert result.result is None
    request = ip.user_ns["_flux_request"]
    assert request == ip.user_ns["res"].reproduce_request
    assert "%%flux --size landscape_4_3 --steps 2 -g 4 -n 1 -s 13 --format jpeg --safety\na windmill" in stdout
    # the printed cell reproduces the same images, whatever the defaults are now
    run(ip, "%config FluxMagics.output_format = 'png'")
    run(ip, "%config FluxMagics.num_images = 2")
    run(ip, "%config FluxMagics.enable_safety_checker = False")
    run(ip, "%config FluxMagics.image_size = 'square'")
    first, body = stdout.split("%%flux", 1)[1].split("\n", 1)
    again, *_ = run(ip, "%%flux --no-cache" + first + "\n" + body.strip())
    assert not again.result.cached
    assert again.result.request == ip.user_ns["res"].reproduce_request
    assert again.result.images[0].to_pil().tobytes() == ip.user_ns["res"].images[0].to_pil().tobytes()


def test_no_cache_option_is_passed_on(ip, monkeypatch):
    seen = {}
    real = client_module.FluxClient.generate

    def spy(self, prompt=None, **kwargs):
        seen.update(kwargs)
        return real(self, prompt, **kwargs)

    monkeypatch.setattr(client_module.FluxClient, "generate", spy)
    run(ip, "%%flux --no-cache --steps 1 -s 1\na fox")
    assert seen["cache"] is False
    run(ip, "%%flux --steps 1 -s 1\na fox")
    assert seen["cache"] is True


def test_progress_shows_queue_time_and_logs_then_clears(ip, live_server):
    server = live_server(latency=0.4)
    run(ip, f"%config FluxMagics.endpoint = '{server.url}'")
    run(ip, "%config FluxMagics.progress = 'on'")
    result, _, _, outputs = run(ip, "%%flux --steps 3 -s 1\na fox")
    assert isinstance(result.result, FluxResult)
    texts = [o.data.get("text/plain", "") for o in outputs]
    assert texts[0].startswith("submitting to ")
    assert any(("running ·" in t or "queued" in t) and " s" in t for t in texts[1:-1]), texts
    assert any("\n  " in t for t in texts), texts  # the server's log lines
    assert texts[-1] == ""  # replaced: the grid is the cell's value
    assert all(o.metadata is not None for o in outputs)


def test_ctrl_c_cancels_the_job_on_the_server(ip, live_server):
    server = live_server(latency=20)
    run(ip, f"%config FluxMagics.endpoint = '{server.url}'")
    run(ip, "%config FluxMagics.progress = 'on'")  # so the progress line can say "cancelled"

    def interrupt_when_running():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(f"{server.url}/stats").json()["jobs"]["submitted"]:
                time.sleep(0.3)
                # a real SIGINT, as Jupyter's stop button sends (interrupt_main does not wake a wait)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_when_running, daemon=True)
    thread.start()
    result, stdout, stderr, outputs = run(ip, "%%flux --steps 2\na fox")
    thread.join()
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # not swallowed: Run All stops here
    assert "cancelled" in [o.data.get("text/plain") for o in outputs], outputs
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/stats").json()["jobs"]["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/stats").json()["jobs"]["cancelled"] == 1


def test_help_lists_options(ip):
    _, stdout, _, _ = run(ip, "%flux help")
    for option in ("--size", "--steps", "--guidance", "--num-images", "--seed", "--lora", "--no-safety", "--save", "-x",
                   "--dry-run", "--max-cells"):
        assert option in stdout
    assert "%config FluxMagics" in stdout and "max_cells" in stdout
    # the words that make a line a subcommand, and the way out
    assert "help | config | history [N] [SEARCH] | load PATH | login" in stdout
    assert "%flux -- history of rome" in stdout
    assert '-x "guidance=2-6 [5]"' in stdout  # line-magic sweep values are one word


def test_login_asks_with_getpass_and_never_echoes(ip, monkeypatch):
    from flux_nb import backend

    monkeypatch.setattr("getpass.getpass", lambda prompt="": "sk-test-secret")
    monkeypatch.setattr(backend, "_session_key", None)
    try:
        _, stdout, stderr, _ = run(ip, "%flux login")
        assert backend._session_key is not None and backend._session_key.reveal() == "sk-test-secret"
        assert client_module.get_client().backend.kind == "fal"  # the key now selects fal.ai
        assert "sk-test-secret" not in stdout + stderr and "key set" in stdout
        assert "sk-test-secret" not in str(ip.user_ns.get("_", ""))
        assert "FAL_KEY" not in os.environ  # memory only, not the environment
    finally:
        backend.clear_session_key()


def test_history_lists_recent_generations(ip):
    run(ip, "%%flux --steps 1 -s 1\na lonely lighthouse")
    run(ip, "%%flux --steps 1 -s 2\na busy harbour")
    _, stdout, stderr, _ = run(ip, "%flux history 5")
    assert "a lonely lighthouse" in stdout and "a busy harbour" in stdout, stderr
    _, stdout, _, _ = run(ip, "%flux hist << history 5 harbour")
    assert "a busy harbour" in stdout and "lighthouse" not in stdout
    assert len(ip.user_ns["hist"]) == 1


def test_sweep_options_call_sweep_in_axis_order(ip, monkeypatch):
    calls = []
    fake = types.ModuleType("flux_nb.sweeps")

    def sweep(prompt, **kwargs):
        calls.append((prompt, kwargs))
        return "plan"

    fake.sweep = sweep
    monkeypatch.setitem(sys.modules, "flux_nb.sweeps", fake)
    ip.user_ns["animal"] = "owl"
    result, stdout, stderr, _ = run(
        ip, "%%flux -s 5 -y steps=10-40 [4] -x guidance=2,3.5 -z size=square,portrait_4_3 --dry-run\nan {{ animal }}"
    )
    assert result.result == "plan", stderr
    prompt, kwargs = calls[0]
    assert prompt == "an owl"
    assert list(kwargs)[5:8] == ["guidance", "steps", "size"]  # x, y, z whatever order they were written in
    assert kwargs["guidance"] == [2.0, 3.5] and kwargs["steps"] == [10, 20, 30, 40]
    assert kwargs["size"] == ["square", "portrait_4_3"]
    assert kwargs["dry_run"] is True and kwargs["seed"] == 5 and kwargs["concurrency"] == 16
    assert kwargs["max_cells"] == 256
    assert "num_inference_steps" not in kwargs and "guidance_scale" not in kwargs and "image_size" not in kwargs

    # the line magic: an axis value is one word, the rest is the prompt; --max-cells reaches the sweep
    calls.clear()
    result, _, stderr, _ = run(ip, "%flux -x guidance=1,2 --max-cells 9 a fox at dusk")
    assert result.result == "plan", stderr
    prompt, kwargs = calls[0]
    assert prompt == "a fox at dusk" and kwargs["guidance"] == [1.0, 2.0] and kwargs["max_cells"] == 9
    calls.clear()
    run(ip, "%config FluxMagics.max_cells = 1000")
    run(ip, '%flux -x "guidance=2-6 [5]" -y steps=1,2 a fox')
    prompt, kwargs = calls[0]
    assert prompt == "a fox" and kwargs["guidance"] == [2.0, 3.0, 4.0, 5.0, 6.0] and kwargs["max_cells"] == 1000


def test_real_sweep_dry_run(ip):
    result, stdout, stderr, _ = run(ip, "%%flux -x guidance=2,3.5,5 -y steps=4,8 -s 1 --dry-run\na fox")
    assert result.error_in_exec is None and "Traceback" not in stdout + stderr
    plan = result.result
    assert plan.dry_run and len(plan.cells) == 6
    assert sorted({c.request.guidance_scale for c in plan.cells}) == [2.0, 3.5, 5.0]
    assert {c.request.num_inference_steps for c in plan.cells} == {4, 8} and {c.request.seed for c in plan.cells} == {1}


def test_oversized_sweep_is_refused_with_the_magics_way_to_raise_the_cap(ip, live_server):
    server = live_server()
    run(ip, f"%config FluxMagics.endpoint = '{server.url}'")
    result, stdout, stderr, _ = run(ip, "%%flux -x seed=1-300 --steps 1\na fox")
    assert_one_line_error(result, stdout, stderr, "300 cells", "limit of 256", "--max-cells 300",
                          "FluxMagics.max_cells")
    assert "max_cells=" not in stderr.splitlines()[0]  # not the Python keyword's wording
    result, stdout, stderr, _ = run(ip, "%%flux -x seed=1-3 --max-cells 2 --steps 1\na fox")
    assert_one_line_error(result, stdout, stderr, "3 cells", "limit of 2", "--max-cells 3")
    assert httpx.get(f"{server.url}/stats").json()["jobs"]["submitted"] == 0
    result, stdout, stderr, _ = run(ip, "%%flux -x seed=1-3 --max-cells 3 --steps 1\na fox")
    assert len(result.result.cells) == 3 and all(c.ok for c in result.result.cells), stderr


def test_double_dash_makes_a_subcommand_word_a_prompt(ip):
    result, stdout, stderr, _ = run(ip, "%flux -s 2 --steps 1 -- history of rome")
    assert isinstance(result.result, FluxResult), stderr
    assert result.result.prompt == "history of rome" and result.result.seed == 2
    _, stdout, _, _ = run(ip, "%flux history 5")  # still the subcommand without --
    assert "history of rome" in stdout


@pytest.mark.parametrize("values", ["on,off", "true,false"])
def test_boolean_sweep_axis_is_read_by_the_sweep_grammar(ip, values):
    result, stdout, stderr, _ = run(ip, f"%%flux -x safety={values} -s 1 --dry-run\na fox")
    assert result.error_in_exec is None and "Traceback" not in stdout + stderr, stderr
    assert not stderr.strip(), stderr
    assert [c.request.enable_safety_checker for c in result.result.cells] == [True, False]


def test_bad_sweep_values_are_one_line_errors(ip):
    result, stdout, stderr, _ = run(ip, "%%flux -x safety=maybe --dry-run\na fox")
    assert_one_line_error(result, stdout, stderr, "maybe", "true or false")


def test_login_uses_the_backends_login(ip, monkeypatch):
    from flux_nb import backend

    calls = []
    monkeypatch.setattr(backend, "login", lambda: calls.append(1))
    _, stdout, stderr, _ = run(ip, "%flux login")
    assert calls == [1] and "key set" in stdout, stderr


def test_login_with_an_empty_key_changes_nothing(ip, monkeypatch):
    from flux_nb import backend

    monkeypatch.setattr("getpass.getpass", lambda prompt="": "   ")
    monkeypatch.setattr(backend, "_session_key", None)
    result, stdout, stderr, _ = run(ip, "%flux login")
    assert backend._session_key is None and "key set" not in stdout
    assert "Traceback" not in stdout + stderr and stderr.startswith("flux: ") and "non-empty" in stderr
