"""The panel's Sweep tab: pick X and Y axes and their values, see the cost, run ``flux_nb.sweep``.

Values use A1111's X/Y/Z grammar (``2,3.5,5``, ``1-5``, ``1-9 (+2)``, ``0-1 [5]``); sizes are a
comma-separated list of presets or ``WIDTHxHEIGHT``. Everything not on an axis comes from the
panel's controls. The sweep runs in a worker thread (``sweep()`` is a blocking call), so the kernel
stays free; its contact sheet replaces the output grid.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..errors import FluxValidationError
from .code import describe_error, estimate_cost

if TYPE_CHECKING:  # pragma: no cover
    from .widget import Panel

__all__ = ["SweepTab", "SWEEP_AXES", "sweep_arguments"]

NONE = ""

#: Fields the tab offers as axes: (label, field).
SWEEP_AXES: list[tuple[str, str]] = [
    ("Guidance", "guidance_scale"),
    ("Steps", "num_inference_steps"),
    ("Seed", "seed"),
    ("Image size", "image_size"),
]


def _axis_value(field: str, text: str) -> Any:
    """What ``sweep()`` gets for an axis: grammar text as is; sizes as a list (a size is not a number)."""
    if field == "image_size":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text.strip()


def sweep_arguments(request: Any, axes: list[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """``(prompt, keywords)`` for ``flux_nb.sweeps.sweep``: axes first (in order), then the fixed fields.

    ``axes`` is ``[(field, values_text), ...]``; a field on an axis is not also passed as fixed.
    """
    keywords: dict[str, Any] = {}
    for field, text in axes:
        if not text.strip():
            raise FluxValidationError([_missing_values(field)])
        keywords[field] = _axis_value(field, text)
    fixed = request.to_dict()
    fixed.pop("prompt")
    fixed.pop("sync_mode")
    fixed.pop("acceleration")
    if not fixed["loras"]:
        fixed.pop("loras")
    else:  # a tuple of LoraWeight is one fixed choice, never an axis of LoRAs
        fixed["loras"] = tuple(request.loras)
    fixed["image_size"] = request.image_size  # a preset name or an ImageSize, as the request has it
    for field, value in fixed.items():
        keywords.setdefault(field, value)
    return request.prompt, keywords


def _missing_values(field: str) -> Any:
    from ..errors import FieldError

    return FieldError(field, "", "needs values for the sweep axis, e.g. 2-6 [5] or 1,2,3", "missing")


class SweepTab(widgets.VBox):
    """X/Y axis pickers, values, a dry-run cost line and Run. Owned by a :class:`Panel`."""

    def __init__(self, panel: "Panel"):
        self._panel = panel
        self._thread: threading.Thread | None = None
        options = [("(none)", NONE), *SWEEP_AXES]
        self.x_axis = widgets.Dropdown(options=SWEEP_AXES, value="guidance_scale", description="X axis")
        self.x_axis.add_class("flux-nb-sweep-x")
        self.x_values = widgets.Text(value="2-6 [3]", description="values", placeholder="2-6 [5]")
        self.x_values.add_class("flux-nb-sweep-x-values")
        self.y_axis = widgets.Dropdown(options=options, value=NONE, description="Y axis")
        self.y_axis.add_class("flux-nb-sweep-y")
        self.y_values = widgets.Text(value="", description="values", placeholder="1,2,3")
        self.y_values.add_class("flux-nb-sweep-y-values")
        self.estimate_button = widgets.Button(description="Estimate", icon="calculator")
        self.estimate_button.add_class("flux-nb-sweep-estimate")
        self.estimate_button.on_click(lambda _b: self.estimate())
        self.run_button = widgets.Button(description="Run sweep", button_style="primary", icon="th")
        self.run_button.add_class("flux-nb-sweep-run")
        self.run_button.on_click(lambda _b: self.run())
        self.cost_line = widgets.HTML("")
        self.cost_line.add_class("flux-nb-sweep-cost")
        self.sweep_result: Any = None
        super().__init__([
            widgets.HBox([self.x_axis, self.x_values]),
            widgets.HBox([self.y_axis, self.y_values]),
            widgets.HBox([self.estimate_button, self.run_button, self.cost_line],
                         layout=widgets.Layout(align_items="center")),
        ])
        self.add_class("flux-nb-sweep")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def axes(self) -> list[tuple[str, str]]:
        """The chosen axes as ``[(field, values_text)]``, X first."""
        chosen = [(self.x_axis.value, self.x_values.value)]
        if self.y_axis.value != NONE:
            if self.y_axis.value == self.x_axis.value:
                from ..errors import FieldError

                raise FluxValidationError([FieldError("Y axis", self.y_axis.value, "must differ from the X axis", "value_error")])
            chosen.append((self.y_axis.value, self.y_values.value))
        return chosen

    def _call_sweep(self, *, dry_run: bool) -> Any:
        from ..sweeps import sweep

        prompt, keywords = sweep_arguments(self._panel.request(), self.axes())
        return sweep(prompt, dry_run=dry_run, cache=self._panel._runner.cache, **keywords)

    def estimate(self) -> dict[str, float] | None:
        """Plan the sweep without sending anything and show its size and cost."""
        try:
            plan = self._call_sweep(dry_run=True)
        except Exception as exc:
            self._panel._report_error(exc, prefix="Sweep: ")
            self.cost_line.value = ""
            return None
        cost = estimate_cost(cell.request for cell in plan.cells)
        self.cost_line.value = (f"{cost['requests']} request(s), {cost['images']} image(s), "
                                f"{cost['megapixels']} MP, about ${cost['cost']:.2f} on fal.ai")
        return cost

    def run(self) -> bool:
        """Estimate, then run the sweep in a worker thread; returns False if it could not start."""
        if self.running:
            self._panel._show_status("A sweep is already running.", "busy")
            return False
        if self.estimate() is None:
            return False
        self._panel.busy = True
        self._panel._show_status("Sweep running...", "busy")
        self._thread = threading.Thread(target=self._work, name="flux-nb-panel-sweep", daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> int:
        """Sweeps run through the blocking ``sweep()`` call and cannot be stopped midway yet."""
        return 0

    def wait(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _work(self) -> None:
        panel = self._panel
        try:
            result = self._call_sweep(dry_run=False)
            self.sweep_result = result
            axes = [field for field, _ in self.axes()]
            grid = result.grid(x=axes[0], y=axes[1] if len(axes) > 1 else None)
            out = io.BytesIO()
            grid.convert("RGB").save(out, format="JPEG", quality=85)
            panel.grid.show_picture(out.getvalue(), f"sweep over {' x '.join(axes)}")
            failed = sum(1 for cell in result.cells if getattr(cell, "error", None) is not None)
            panel._show_status(f"Sweep done: {len(result.cells)} cell(s)" + (f", {failed} failed" if failed else "") + ".",
                               "error" if failed else "done")
        except Exception as exc:
            panel._show_status("Sweep failed: " + describe_error(exc), "error")
            panel.error = exc
        finally:
            panel.busy = panel._runner.busy
