"""``flux_nb.Panel``: the control panel, an ipywidgets 8 widget (displaying it shows the panel).

Layout, top to bottom: prompt; settings (size, steps, guidance, images, seed, LoRAs, safety,
format); a Generate / Sweep tab; Cancel, "copy as code" and the status line; the output grid; the
history strip. Every part has a CSS class (``flux-nb-prompt``, ``flux-nb-generate``, ...) so
browser tests and user stylesheets have stable selectors.

Clicks never block the kernel: work runs on flux-nb's background loop (see :mod:`.worker`).
"""

from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as widgets
import traitlets

from ..errors import FluxValidationError
from ..params import IMAGE_SIZE_PRESETS, LIMITS, FluxRequest, ImageSize
from ..magic_args import cell_template
from .code import describe_error, describe_status, python_code
from .gallery import HistoryStrip, OutputGrid, PanelHistoryEntry
from .lora_editor import LoraEditor
from .worker import Job, JobRunner

__all__ = ["Panel"]

CUSTOM = "custom"


def _classed(widget: widgets.Widget, name: str) -> widgets.Widget:
    widget.add_class(name)
    return widget


class Panel(widgets.VBox):
    """A control panel for ``fal-ai/flux-lora`` generations.

    ``Panel(client=None, **defaults)``: ``client`` is a :class:`~flux_nb.client.FluxClient` or an
    ``AsyncFluxClient`` living on flux-nb's shared loop (default: ``flux_nb.client.get_client()``,
    chosen from the environment). ``defaults`` are request fields or their aliases
    (``prompt``, ``size``, ``steps``, ``guidance``, ``n``, ``seed``, ``loras``, ``format``, ...),
    checked like any request. ``acceleration`` and ``sync_mode`` have no control: the panel holds
    them (attributes of the same names), sends them with every request, shows them in "copy as
    code" and takes them from a restored request. ``cache=False`` always generates afresh;
    ``thumb_size`` sets the grid's thumbnail size in pixels.

    Drive it from code as from the mouse: set widget values, then ``generate()`` (or
    ``generate_button.click()``), ``cancel()``, ``wait()``; ``on_result(cb)`` / ``on_error(cb)``
    register callbacks (called on flux-nb's background thread).
    """

    #: The status line as plain text ("Ready", "Generating #2 ...", "Done ...", "Cancelled ...").
    status = traitlets.Unicode("Ready")
    #: Generations waiting behind the running one.
    queued = traitlets.Int(0)
    #: True while a generation (or a sweep) is running or waiting.
    busy = traitlets.Bool(False)
    #: The latest :class:`~flux_nb.result.FluxResult` (None until the first one).
    result = traitlets.Any(None)
    #: The latest error shown (None after a success).
    error = traitlets.Any(None)

    def __init__(self, client: Any = None, *, cache: bool = True, thumb_size: int = 256, **defaults: Any):
        start = self._initial_request(defaults)
        self._client = client
        #: fal's ``acceleration`` and ``sync_mode``: no widget, but kept and sent (see the class doc).
        self.acceleration: str = start.acceleration
        self.sync_mode: bool = start.sync_mode
        self._result_handlers = widgets.CallbackDispatcher()
        self._error_handlers = widgets.CallbackDispatcher()
        self._history: list[PanelHistoryEntry] = []
        self._runner = JobRunner(self._async_client, cache=cache, on_start=self._job_started,
                                 on_status=self._job_status, on_finish=self._job_finished,
                                 prepare=self._job_prepare)
        self._build_controls()
        self.grid = OutputGrid(thumb_size)
        self.history_strip = HistoryStrip(self.restore)
        from .sweep_tab import SweepTab

        self.sweep_tab = SweepTab(self)
        self.tabs = _classed(widgets.Tab(children=[self._generate_tab(), self.sweep_tab],
                                         titles=["Generate", "Sweep"]), "flux-nb-tabs")
        super().__init__([
            self.prompt,
            self._settings_box(),
            self.tabs,
            widgets.HBox([self.cancel_button, self.code_toggle, self.status_line],
                         layout=widgets.Layout(align_items="center")),
            self.code_area,
            self.grid,
            _classed(widgets.HTML("<b>History</b> (click to restore)"), "flux-nb-history-title"),
            self.history_strip,
        ])
        self.add_class("flux-nb-panel")
        self.set_request(start, randomize=start.seed is None)
        if not defaults.get("prompt"):  # the stand-in prompt that made the request valid
            self.prompt.value = ""
        self._show_status("Ready", "idle")

    # -- building -----------------------------------------------------------------------------

    @staticmethod
    def _initial_request(defaults: dict[str, Any]) -> FluxRequest:
        fields = dict(defaults)
        prompt = fields.pop("prompt", None) or "placeholder"  # an empty prompt is fine until Generate
        return FluxRequest(prompt, **fields)

    def _build_controls(self) -> None:
        wide = widgets.Layout(width="100%")
        self.prompt = _classed(widgets.Textarea(placeholder="Describe the image...", rows=3, layout=wide),
                               "flux-nb-prompt")
        options = [(f"{name} ({w}x{h})", name) for name, (w, h) in IMAGE_SIZE_PRESETS.items()] + [("custom", CUSTOM)]
        self.size = _classed(widgets.Dropdown(options=options, description="Size"), "flux-nb-size")
        lo, hi = LIMITS["side"]
        self.width = _classed(widgets.BoundedIntText(value=1024, min=lo, max=hi, step=16, description="W",
                                                     layout=widgets.Layout(width="140px")), "flux-nb-width")
        self.height = _classed(widgets.BoundedIntText(value=768, min=lo, max=hi, step=16, description="H",
                                                      layout=widgets.Layout(width="140px")), "flux-nb-height")
        for w in (self.width, self.height):
            w.style.description_width = "20px"
        self.custom_size = _classed(widgets.HBox([self.width, self.height]), "flux-nb-custom-size")
        self.size.observe(self._size_changed, "value")
        lo, hi = LIMITS["num_inference_steps"]
        self.steps = _classed(widgets.IntSlider(value=28, min=lo, max=hi, description="Steps"), "flux-nb-steps")
        lo, hi = LIMITS["guidance_scale"]
        self.guidance = _classed(widgets.FloatSlider(value=3.5, min=lo, max=hi, step=0.1, readout_format=".1f",
                                                     description="Guidance"), "flux-nb-guidance")
        lo, hi = LIMITS["num_images"]
        self.num_images = _classed(widgets.IntSlider(value=1, min=lo, max=hi, description="Images"), "flux-nb-num-images")
        self.seed = _classed(widgets.IntText(value=42, description="Seed", layout=widgets.Layout(width="220px")),
                             "flux-nb-seed")
        self.randomize = _classed(widgets.Checkbox(value=True, description="random seed", indent=False,
                                                   layout=widgets.Layout(width="auto")), "flux-nb-randomize")
        self.randomize.observe(lambda ch: setattr(self.seed, "disabled", ch["new"]), "value")
        self.seed.disabled = self.randomize.value  # the observer only sees changes
        self.loras = LoraEditor(on_change=lambda: self._settings_changed({}))
        self.safety = _classed(widgets.Checkbox(value=True, description="safety checker", indent=False,
                                                layout=widgets.Layout(width="auto")), "flux-nb-safety")
        self.output_format = _classed(widgets.Dropdown(options=["jpeg", "png"], description="Format",
                                                       layout=widgets.Layout(width="200px")), "flux-nb-format")
        self.generate_button = _classed(widgets.Button(description="Generate", button_style="primary", icon="play"),
                                        "flux-nb-generate")
        self.generate_button.on_click(lambda _b: self.generate())
        self.cancel_button = _classed(widgets.Button(description="Cancel", button_style="warning", icon="stop"),
                                      "flux-nb-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        # Cancel is live only while something runs, so an idle panel doesn't invite a no-op click.
        self.cancel_button.disabled = True
        self.observe(lambda change: setattr(self.cancel_button, "disabled", not change["new"]), "busy")
        self.status_line = _classed(widgets.HTML(), "flux-nb-status")
        self.code_toggle = _classed(widgets.ToggleButton(description="Copy as code", icon="code", value=False),
                                    "flux-nb-code-toggle")
        self.code_area = _classed(widgets.Textarea(rows=12, layout=widgets.Layout(width="100%", display="none")),
                                  "flux-nb-code")
        self.code_toggle.observe(self._code_toggled, "value")
        for control in (self.prompt, self.size, self.width, self.height, self.steps, self.guidance,
                        self.num_images, self.seed, self.randomize, self.safety, self.output_format):
            control.observe(self._settings_changed, "value")

    def _settings_box(self) -> widgets.Widget:
        box = widgets.VBox([
            widgets.HBox([self.size, self.custom_size]),
            widgets.HBox([self.steps, self.guidance]),
            widgets.HBox([self.num_images, self.seed, self.randomize]),
            widgets.HBox([self.safety, self.output_format]),
            _classed(widgets.HTML("<b>LoRAs</b>"), "flux-nb-loras-title"),
            self.loras,
        ])
        return _classed(box, "flux-nb-settings")

    def _generate_tab(self) -> widgets.Widget:
        return _classed(widgets.HBox([self.generate_button]), "flux-nb-generate-tab")

    # -- the request the controls describe ----------------------------------------------------

    def request(self) -> FluxRequest:
        """The :class:`FluxRequest` the controls describe (raises ``FluxValidationError``)."""
        size: Any = self.size.value
        if size == CUSTOM:
            size = ImageSize(self.width.value, self.height.value)
        return FluxRequest(
            self.prompt.value.strip(),
            image_size=size,
            num_inference_steps=self.steps.value,
            guidance_scale=float(self.guidance.value),
            num_images=self.num_images.value,
            seed=None if self.randomize.value else self.seed.value,
            loras=self.loras.value(),
            enable_safety_checker=self.safety.value,
            output_format=self.output_format.value,
            sync_mode=self.sync_mode,
            acceleration=self.acceleration,
        )

    def set_request(self, request: FluxRequest, *, randomize: bool | None = None) -> None:
        """Put ``request``'s settings into the controls. ``randomize`` defaults to "no seed given"."""
        self.prompt.value = request.prompt
        if isinstance(request.image_size, str):
            self.size.value = request.image_size
        else:
            self.size.value = CUSTOM
            self.width.value, self.height.value = request.image_size.width, request.image_size.height
        self.steps.value = request.num_inference_steps
        self.guidance.value = request.guidance_scale
        self.num_images.value = request.num_images
        if request.seed is not None:
            self.seed.value = request.seed
        self.randomize.value = request.seed is None if randomize is None else randomize
        self.loras.set(request.loras)
        self.safety.value = request.enable_safety_checker
        self.output_format.value = request.output_format
        self.acceleration, self.sync_mode = request.acceleration, request.sync_mode

    # -- actions ------------------------------------------------------------------------------

    def generate(self) -> Job | None:
        """Queue a generation of the current settings; returns at once (None if settings are bad)."""
        try:
            request = self.request()
        except FluxValidationError as exc:
            self._report_error(exc)
            return None
        job = self._runner.submit(request)
        self.busy = True
        self._refresh_status_after_submit(job)
        return job

    def cancel(self) -> int:
        """Cancel the running generation (on the server too) and the queued ones; returns how many."""
        count = self._runner.cancel_all() + self.sweep_tab.cancel()
        if not count:
            self._show_status("Nothing to cancel.", "idle")
        else:
            self._show_status(f"Cancelling {count} job(s)...", "busy")
        return count

    def wait(self, timeout: float | None = None) -> Any:
        """Block until every queued generation and sweep has finished; return the latest result.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first. For scripts and tests: in a
        notebook, clicks are not processed while this waits.
        """
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._runner.wait(timeout):
            raise TimeoutError(f"the panel was still busy after {timeout} s")
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.sweep_tab.wait(remaining):
            raise TimeoutError(f"the sweep was still running after {timeout} s")
        return self.result

    def on_result(self, callback: Callable[[Any], None], remove: bool = False) -> None:
        """Call ``callback(result)`` after each finished generation (on the background thread)."""
        self._result_handlers.register_callback(callback, remove=remove)

    def on_error(self, callback: Callable[[BaseException], None], remove: bool = False) -> None:
        """Call ``callback(exception)`` when a generation fails or settings are invalid."""
        self._error_handlers.register_callback(callback, remove=remove)

    @property
    def history(self) -> list[PanelHistoryEntry]:
        """This panel's finished generations, oldest first."""
        return list(self._history)

    def restore(self, entry: PanelHistoryEntry | Any) -> None:
        """Put a past generation's settings (with the seed it used) back into the controls.

        ``entry`` is a :class:`PanelHistoryEntry`, its 1-based number, a ``FluxResult`` or a ``FluxRequest``.
        """
        if isinstance(entry, int):
            matches = [e for e in self._history if e.index == entry]
            if not matches:
                raise IndexError(f"no history entry #{entry}; this panel has {len(self._history)}")
            entry = matches[0]
        if isinstance(entry, PanelHistoryEntry):
            request = entry.reproduce_request
            result = entry.result
        elif isinstance(entry, FluxRequest):
            request, result = entry, None
        else:  # a FluxResult
            request, result = entry.reproduce_request, entry
        self.set_request(request, randomize=request.seed is None)
        if result is not None:
            self.grid.show_result(result)
        self._show_status(f"Restored settings{f' (seed {request.seed})' if request.seed is not None else ''}.", "idle")

    def code(self) -> tuple[str, str]:
        """The ``%%flux`` cell and the Python call reproducing the current settings."""
        request = self.request()
        return cell_template(request), python_code(request)

    # -- background hooks (run on flux-nb's loop thread) --------------------------------------

    def _own_client(self) -> Any:
        """The client this panel sends to (generations and sweeps alike), made on first use."""
        if self._client is None:
            from ..client import get_client

            self._client = get_client()
        return self._client

    def _async_client(self) -> Any:
        client = self._own_client()
        return getattr(client, "aio", client)

    def _queue_note(self) -> str:
        waiting = self._runner.queued
        self.queued = waiting
        return f" ({waiting} queued)" if waiting else ""

    def _refresh_status_after_submit(self, job: Job) -> None:
        ahead = self._runner.pending - 1
        self.queued = self._runner.queued
        if ahead > 0:
            self._show_status(f"Queued #{job.id} behind {ahead} other(s).", "busy")
        else:
            self._show_status(f"Starting #{job.id}...", "busy")

    def _job_started(self, job: Job) -> None:
        self._show_status(f"Generating #{job.id}: submitting{self._queue_note()}...", "busy")

    def _job_status(self, job: Job, status: Any) -> None:
        detail = describe_status(status)
        self._show_status(f"Generating #{job.id}: {detail}{self._queue_note()}", "busy")

    def _job_prepare(self, job: Job) -> None:
        # In a worker thread: decode the images into the thumbnails _job_finished will show.
        self.grid.prepare(job.result)
        self.history_strip.prepare(job.result)

    def _job_finished(self, job: Job) -> None:
        after = self._queue_note()
        if job.state == "done":
            result = job.result
            entry = PanelHistoryEntry(len(self._history) + 1, job.request, result)
            self._history.append(entry)
            if job.request.seed is None and result.seed is not None:
                # "random seed" stays ticked; un-ticking it now reproduces this result
                self.seed.value = result.seed
            self.grid.show_result(result)
            self.history_strip.add(entry)
            self.result, self.error = result, None
            took_text = f" in {job.elapsed:.1f} s" if job.elapsed is not None else ""
            cached = " (from cache)" if getattr(result, "cached", False) else ""
            self._show_status(f"Done #{job.id}: {len(result.images)} image(s), seed {result.seed}{took_text}{cached}{after}.",
                              "done")
            self._result_handlers(result)
        elif job.state == "cancelled":
            self._show_status(f"Cancelled #{job.id}{after}.", "cancelled")
        elif job.error is not None:
            self._report_error(job.error, prefix=f"#{job.id} failed: ", suffix=after)
        self.busy = self._runner.busy or self.sweep_tab.running

    # -- display helpers ----------------------------------------------------------------------

    def _report_error(self, exc: BaseException, prefix: str = "", suffix: str = "") -> None:
        self.error = exc
        self._show_status(f"{prefix}{describe_error(exc)}{suffix}", "error")
        self._error_handlers(exc)

    def _show_status(self, text: str, kind: str) -> None:
        self.status = text
        self.status_line.value = f'<span class="flux-nb-status-{kind}">{html.escape(text)}</span>'

    def _size_changed(self, change: dict) -> None:
        custom = change["new"] == CUSTOM
        self.custom_size.layout.display = None if custom else "none"
        if not custom:
            self.width.value, self.height.value = IMAGE_SIZE_PRESETS[change["new"]]

    def _code_toggled(self, change: dict) -> None:
        self.code_area.layout.display = None if change["new"] else "none"
        self._refresh_code()

    def _settings_changed(self, _change: dict) -> None:
        toggle = getattr(self, "code_toggle", None)  # LoraEditor reports changes while the panel is built
        if toggle is not None and toggle.value:
            self._refresh_code()

    def _refresh_code(self) -> None:
        try:
            magic, python = self.code()
        except FluxValidationError as exc:
            self.code_area.value = f"# {describe_error(exc)}"
            return
        self.code_area.value = f"{magic}\n\n# or in Python:\n{python}\n"
