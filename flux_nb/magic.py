"""The ``%%flux`` cell magic and ``%flux`` line magic.

``%load_ext flux_nb`` registers :class:`FluxMagics`. Parsing lives in :mod:`flux_nb.magic_args`;
this module runs what was parsed: it builds the request from the traitlet defaults and the options,
shows progress while the job runs, and returns the result (the cell's value) or stores it quietly
(``name <<``). Usage errors print one line and the usage to stderr, never a traceback; Ctrl-C
(the stop button) is left to reach the client, which cancels the job on the server.
"""

from __future__ import annotations

import html
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, CaselessStrEnum, Float, Int, TraitError, Unicode, observe, validate
from traitlets.config.configurable import Configurable

from .errors import FluxError, FluxValidationError
from .magic_args import (
    MagicUsageError,
    cell_template,
    help_text,
    interpolate,
    parse_line,
    parse_options,
    split_capture,
    usage,
)
from .params import LIMITS, parse_image_size

__all__ = ["FluxMagics", "Progress", "load_ipython_extension"]


class Progress:
    """Progress of one job, shown in place through one display handle, at most ~10 updates/s.

    ``update`` is called from the client's ``on_status`` (on flux-nb's loop thread); an update that
    comes too soon is held and shown when the interval has passed, so the last state always shows.
    """

    def __init__(self, enabled: bool, *, interval: float = 0.1, log_lines: int = 6):
        self.enabled = enabled
        self.interval = interval
        self.log_lines = log_lines
        self.handle: Any = None
        self._lock = threading.Lock()
        self._last = 0.0
        self._pending: Any = None
        self._flush_scheduled = False
        self._closed = False
        self.updates = 0  # how many times the display was updated (for tests and curiosity)

    def start(self, backend: str) -> None:
        if not self.enabled:
            return
        from IPython.display import display

        self.handle = display(self._bundle(f"submitting to {backend}…", []), raw=True, display_id=True)
        self._last = time.monotonic()

    @staticmethod
    def _bundle(headline: str, logs: list[str]) -> dict[str, str]:
        text = headline + "".join(f"\n  {line}" for line in logs)
        body = "".join(f"{html.escape(line)}\n" for line in logs)
        pre = f'<pre style="margin:2px 0 0;font-size:11px;opacity:.8">{body}</pre>' if logs else ""
        return {"text/plain": text, "text/html": f'<div class="fluxnb-progress">⏳ {html.escape(headline)}{pre}</div>'}

    def _render(self, status: Any) -> dict[str, str]:
        if status.status == "IN_QUEUE":
            where = f" (position {status.queue_position})" if status.queue_position is not None else ""
            headline = f"queued{where} · {status.elapsed:.1f} s"
        elif status.status == "IN_PROGRESS":
            headline = f"running · {status.elapsed:.1f} s"
        else:
            headline = f"finishing · {status.elapsed:.1f} s"
        logs = [entry.message for entry in status.logs[-self.log_lines :]]
        return self._bundle(headline, logs)

    def update(self, status: Any) -> None:
        if self.handle is None:
            return
        with self._lock:
            if self._closed:
                return
            self._pending = status
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                if not self._flush_scheduled:
                    self._flush_scheduled = self._schedule(wait)
                return
        self._flush()

    def _schedule(self, delay: float) -> bool:
        import asyncio

        try:
            asyncio.get_running_loop().call_later(delay, self._flush)
        except RuntimeError:  # not on a loop: show it on the next update instead
            return False
        return True

    def _flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
            status, self._pending = self._pending, None
            if status is None or self._closed:
                return
            self._last = time.monotonic()
            self.updates += 1
            self.handle.update(self._render(status), raw=True)

    def close(self, message: str = "") -> None:
        """Stop updating; leave ``message`` (or nothing) in place of the progress."""
        with self._lock:
            self._closed = True
            if self.handle is not None:
                self.handle.update({"text/plain": message} if message else {"text/plain": ""}, raw=True)


def _data_dir() -> Path:
    from .store import default_data_dir

    return default_data_dir()


@magics_class
class FluxMagics(Magics, Configurable):
    """``%%flux`` / ``%flux``. Defaults below are set with ``%config FluxMagics.<name> = value``."""

    image_size = Unicode("landscape_4_3", help="default image size: a preset name or WIDTHxHEIGHT").tag(config=True)
    num_inference_steps = Int(28, help="default inference steps (1-50)").tag(config=True)
    guidance_scale = Float(3.5, help="default guidance (CFG) scale (0-35)").tag(config=True)
    num_images = Int(1, help="default images per request (1-4)").tag(config=True)
    output_format = CaselessStrEnum(["jpeg", "png"], "jpeg", help="default output format").tag(config=True)
    enable_safety_checker = Bool(True, help="run the safety checker by default").tag(config=True)
    concurrency = Int(16, help="requests in flight at once in sweeps").tag(config=True)
    max_cells = Int(256, help="sweeps with more cells are refused (--max-cells N raises it for one cell)").tag(config=True)
    thumbnail_size = Int(256, help="longest side of inline thumbnails, in pixels").tag(config=True)
    data_dir = Unicode(
        "", help="folder for saved generations and the cache (sets FLUX_NB_DATA_DIR); empty: the default"
    ).tag(config=True)
    endpoint = Unicode(
        "", help="fal-compatible server URL to use (sets FLUX_NB_ENDPOINT); empty: fal.ai with FAL_KEY, else the embedded preview server"
    ).tag(config=True)
    progress = CaselessStrEnum(
        ["auto", "on", "off"], "auto", help="show queue position, time and logs while a job runs (auto: in Jupyter)"
    ).tag(config=True)

    # -- validation of the defaults ----------------------------------------------------------

    @validate("image_size")
    def _check_size(self, proposal: Any) -> str:
        errors: list = []
        parsed = parse_image_size(proposal["value"], errors)
        if parsed is None:
            raise TraitError(f"FluxMagics.image_size: {errors[0]}")
        return str(parsed)

    def _check_range(self, name: str, value: Any, limit: str) -> Any:
        lo, hi = LIMITS[limit]
        if not lo <= value <= hi:
            raise TraitError(f"FluxMagics.{name}={value!r}: must be from {lo:g} to {hi:g}")
        return value

    @validate("num_inference_steps", "guidance_scale", "num_images")
    def _check_numbers(self, proposal: Any) -> Any:
        name = proposal["trait"].name
        return self._check_range(name, proposal["value"], name)

    @validate("concurrency", "max_cells")
    def _check_at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"FluxMagics.{proposal['trait'].name}={proposal['value']!r}: must be at least 1")
        return proposal["value"]

    @validate("thumbnail_size")
    def _check_thumbnail(self, proposal: Any) -> int:
        if not 8 <= proposal["value"] <= 4096:
            raise TraitError(f"FluxMagics.thumbnail_size={proposal['value']!r}: must be from 8 to 4096 pixels")
        return proposal["value"]

    @observe("thumbnail_size")
    def _thumbnail_changed(self, change: Any) -> None:
        from . import render

        render.configure(thumbnail_size=change["new"])

    @observe("data_dir")
    def _data_dir_changed(self, change: Any) -> None:
        self._set_env("FLUX_NB_DATA_DIR", str(Path(change["new"]).expanduser().resolve()) if change["new"] else "")

    @observe("endpoint")
    def _endpoint_changed(self, change: Any) -> None:
        self._set_env("FLUX_NB_ENDPOINT", change["new"].strip())

    @staticmethod
    def _set_env(name: str, value: str) -> None:
        # The default client and store are rebuilt when these variables change.
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)

    def defaults(self) -> dict[str, Any]:
        """The request fields every generation starts from."""
        return {
            "image_size": self.image_size,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "num_images": self.num_images,
            "output_format": self.output_format.lower(),
            "enable_safety_checker": self.enable_safety_checker,
        }

    # -- entry point -------------------------------------------------------------------------

    @line_cell_magic
    def flux(self, line: str, cell: str | None = None) -> Any:
        """Generate images with Flux LoRA. ``%flux help`` lists every option."""
        try:
            return self._dispatch(line, cell)
        except (MagicUsageError, FluxValidationError) as exc:
            self._error(str(exc), with_usage=True)
        except SystemExit:  # argparse's own exit, should a path bypass the magic parser
            self._error("invalid options", with_usage=True)
        except FluxError as exc:
            self._error(str(exc), with_usage=False)
        return None

    @staticmethod
    def _error(message: str, *, with_usage: bool) -> None:
        print(f"flux: {message}", file=sys.stderr)
        if with_usage:
            print(usage(), file=sys.stderr)

    def _dispatch(self, line: str, cell: str | None) -> Any:
        capture, rest = split_capture(line)
        if cell is None:
            command, words, opts = parse_line(rest)
            if command is not None:
                if capture and command not in ("load", "history"):
                    raise MagicUsageError(f"'{capture} <<' cannot capture %flux {command}")
                value = getattr(self, f"_cmd_{command}")(words)
                if capture:
                    self.shell.user_ns[capture] = value
                # What a subcommand shows is printed; returning it too would repeat it as Out[n].
                return None
            prompt = " ".join(opts.words)
            if not prompt.strip():
                raise MagicUsageError("no prompt: write %flux PROMPT, or %%flux with the prompt in the cell")
        else:
            opts = parse_options(rest)
            if opts.words:
                raise MagicUsageError(
                    f"unexpected {' '.join(opts.words)!r} on the %%flux line: the prompt goes in the cell body"
                )
            prompt = cell
        prompt = interpolate(prompt, self.shell.user_ns).strip()
        if not prompt:
            raise MagicUsageError("the cell is empty: write the prompt below the %%flux line")
        fields = {**self.defaults(), **opts.fields}
        if opts.is_sweep:
            value = self._sweep(prompt, opts, fields)
        else:
            value = self._generate(prompt, opts, fields)
        if capture:
            self.shell.user_ns[capture] = value
            return None
        return value

    # -- generation --------------------------------------------------------------------------

    def _progress_enabled(self) -> bool:
        if self.progress == "auto":
            return getattr(self.shell, "kernel", None) is not None
        return self.progress == "on"

    def _generate(self, prompt: str, opts: Any, fields: dict[str, Any]) -> Any:
        from .client import get_client
        from .params import FluxRequest

        request = FluxRequest(prompt, **fields)
        client = get_client()
        progress = Progress(self._progress_enabled())
        progress.start(client.backend.describe())
        try:
            result = client.generate(request=request, on_status=progress.update, cache=opts.cache)
        except KeyboardInterrupt:
            # The client has already cancelled the job on the server; say so and let it propagate.
            progress.close("cancelled")
            raise
        except BaseException:
            progress.close()
            raise
        progress.close()
        if opts.save:
            paths = result.save(opts.save)
            print(f"saved {len(paths) - 1} image(s) and the request to {opts.save}")
        return result

    def _sweep(self, prompt: str, opts: Any, fields: dict[str, Any]) -> Any:
        from .params import canonical_field
        from .sweeps import sweep
        from .sweeps.plan import parse_axis_values

        swept = {canonical_field(name) for name in opts.axes}
        if "prompt" in swept:
            raise MagicUsageError("a prompt axis comes from the cell: write variants as {a|b} in the prompt")
        # The sweep's own grammar: numbers "2-6 [5]", booleans on/off, lora=none, CSV quoting.
        axes = {name: parse_axis_values(name, text) for name, text in opts.axes.items()}
        fixed = {name: value for name, value in fields.items() if name not in swept}
        max_cells = opts.max_cells or self.max_cells
        try:
            result = sweep(
                prompt,
                dry_run=opts.dry_run,
                cache=opts.cache,
                vary_seed=opts.vary_seed,
                concurrency=opts.concurrency or self.concurrency,
                max_cells=max_cells,
                **axes,
                **fixed,
            )
        except FluxValidationError as exc:
            too_big = next((e for e in exc.errors if e.field == "max_cells"), None)
            if too_big is None:
                raise
            # The sweep's own wording names its keyword argument; say how to raise it here.
            raise MagicUsageError(
                f"this sweep has {too_big.value} cells, more than the limit of {max_cells}: add "
                f"--max-cells {too_big.value} to run it (or %config FluxMagics.max_cells = {too_big.value}), "
                "or --dry-run to see its cost first"
            ) from None
        if opts.save and not opts.dry_run and hasattr(result, "save"):
            result.save(opts.save)
            print(f"saved the sweep to {opts.save}")
        return result

    # -- line subcommands --------------------------------------------------------------------

    def _cmd_help(self, words: list[str]) -> None:
        print(help_text())
        print(
            "Defaults: %config FluxMagics.<name> = value  (image_size, num_inference_steps, guidance_scale,\n"
            "num_images, output_format, enable_safety_checker, concurrency, max_cells, thumbnail_size,\n"
            "data_dir, endpoint, progress).  %flux config shows them."
        )

    def _cmd_config(self, words: list[str]) -> None:
        from .client import get_client

        lines = [
            f"backend:     {get_client().backend.describe()}",
            f"data folder: {_data_dir()}",
            "defaults:    "
            + ", ".join(f"{k}={v}" for k, v in self.defaults().items())
            + f", concurrency={self.concurrency}, max_cells={self.max_cells}, thumbnail_size={self.thumbnail_size}"
            + f", progress={self.progress}",
            "change with: %config FluxMagics.<name> = value",
        ]
        print("\n".join(lines))

    def _cmd_history(self, words: list[str]) -> list[Any]:
        limit = 20
        if words and re.fullmatch(r"[+-]?\d+", words[0]):  # a count, even a negative one, is never a search
            limit = int(words[0])
            words = words[1:]
        if limit < 1:
            raise MagicUsageError(f"%flux history {limit}: N must be at least 1")
        search = " ".join(words) or None
        from .store import get_store

        entries = get_store().history(limit=limit, search=search)
        if not entries:
            print("no generations yet" if search is None else f"no generations match {search!r}")
            return entries
        for entry in entries:
            print(_history_line(entry))
        return entries

    def _cmd_load(self, words: list[str]) -> Any:
        from .metadata import read_info

        if len(words) != 1:
            raise MagicUsageError("usage: %flux load PATH (one image file; quote a path with spaces)")
        if not Path(words[0]).expanduser().is_file():
            raise MagicUsageError(f"no such file: {words[0]}")
        info = read_info(words[0])
        request = info["request"]
        self.shell.user_ns["_flux_request"] = request
        where = "flux-nb record" if info["source"] == "flux_nb" else "A1111 parameters"
        print(f"request read from {words[0]} ({where}); stored in _flux_request. This cell reproduces it:\n")
        print(cell_template(request))
        return request

    def _cmd_login(self, words: list[str]) -> None:
        from .backend import login

        login()  # an empty key raises FluxConfigError, printed as one line; nothing changes
        print("key set for this session; generations now go to fal.ai (it is not saved anywhere)")


def _history_line(entry: Any) -> str:
    """One line for a past generation (a :class:`flux_nb.store.HistoryEntry`)."""
    request = entry.request
    created = entry.created_at.strftime("%Y-%m-%d %H:%M")
    prompt = request.prompt.replace("\n", " ")
    if len(prompt) > 60:
        prompt = prompt[:57] + "..."
    return (f"{entry.id!s:>6}  {created:16}  seed {entry.seed!s:<12} {request.size_label:14} "
            f"{request.num_inference_steps:>2} steps  cfg {request.guidance_scale!s:<4}  {prompt}")


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%flux`` / ``%%flux`` (called by ``%load_ext flux_nb``); nothing else happens."""
    # Drop an earlier instance (``%reload_ext``) so %config sees a single FluxMagics.
    ipython.configurables[:] = [c for c in ipython.configurables if type(c).__name__ != "FluxMagics"]
    ipython.register_magics(FluxMagics(shell=ipython, parent=ipython))
