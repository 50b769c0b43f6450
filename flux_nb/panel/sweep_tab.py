"""The panel's Sweep tab: pick X and Y axes and their values, see the cost, run a sweep, cancel it.

Values use A1111's X/Y/Z grammar (``2,3.5,5``, ``1-5``, ``1-9 (+2)``, ``0-1 [5]``); sizes are a
comma-separated list of presets or ``WIDTHxHEIGHT``. Everything not on an axis comes from the
panel's controls, read once when Run is clicked (changing a control mid-run cannot mislabel the
grid). The sweep goes to the panel's own client and runs as a task on flux-nb's shared loop, like
the panel's generations: the kernel stays free, Cancel cancels every queued request on the server
and keeps the cells that finished, and the status line counts cells done. Nothing is drawn in the
cell's output by the sweep itself (no progress bar, no live grid: those would land in whatever cell
is current); its contact sheet replaces the panel's output grid.
"""

from __future__ import annotations

import asyncio
import html
import io
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..errors import FluxValidationError
from .code import describe_error

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


#: Seconds between refreshes of the "cells done" count while a sweep runs.
PROGRESS_INTERVAL = 0.25


class SweepTab(widgets.VBox):
    """X/Y axis pickers, values, a dry-run cost line and Run. Owned by a :class:`Panel`."""

    def __init__(self, panel: "Panel"):
        self._panel = panel
        self._future: Any = None  # concurrent future of the running sweep (None when idle)
        self._task: asyncio.Task | None = None  # its task on the shared loop, once started
        self._cancel_requested = False
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
        #: The latest sweep's :class:`~flux_nb.sweeps.SweepResult` (a cancelled one keeps its finished cells).
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
        """True from Run until the sweep (finished, failed or cancelled) has been shown."""
        future = self._future
        return future is not None and not future.done()

    def axes(self) -> list[tuple[str, str]]:
        """The chosen axes as ``[(field, values_text)]``, X first."""
        chosen = [(self.x_axis.value, self.x_values.value)]
        if self.y_axis.value != NONE:
            if self.y_axis.value == self.x_axis.value:
                from ..errors import FieldError

                raise FluxValidationError([FieldError("Y axis", self.y_axis.value, "must differ from the X axis", "value_error")])
            chosen.append((self.y_axis.value, self.y_values.value))
        return chosen

    def _plan(self, prompt: str, keywords: dict[str, Any], *, dry_run: bool) -> Any:
        """The sweep's cells (nothing sent), for the panel's client, with no output of its own."""
        from ..sweeps import plan_sweep

        return plan_sweep(prompt, dry_run=dry_run, cache=self._panel._runner.cache, client=self._panel._own_client(),
                          progress=False, live=False, **keywords)

    def estimate(self) -> Any:
        """Plan the sweep without sending anything and show its size and cost.

        Returns the dry run's :class:`~flux_nb.sweeps.plan.SweepSummary` (identical cells count as
        one request; cells already in the cache are shown apart), or None if the sweep is invalid.
        """
        try:
            prompt, keywords = sweep_arguments(self._panel.request(), self.axes())
            plan = self._plan(prompt, keywords, dry_run=True)
        except Exception as exc:
            self._panel._report_error(exc, prefix="Sweep: ")
            self.cost_line.value = ""
            return None
        summary = plan.summary()
        line = (f"{summary.cells} cell(s): {summary.requests} request(s), {summary.images} image(s), "
                f"{summary.megapixels} MP, about ${summary.cost:.2f} on fal.ai")
        if summary.cached:
            line += f"; {summary.cached} in the cache, {summary.to_send} to send (about ${summary.cost_to_send:.2f})"
        self.cost_line.value = html.escape(line)
        return summary

    def run(self) -> bool:
        """Estimate, then start the sweep in the background; returns False if it could not start."""
        from .._loop import submit

        if self.running:
            self._panel._show_status("A sweep is already running.", "busy")
            return False
        if self.estimate() is None:
            return False
        try:  # the snapshot: what the controls say now is what runs and how the grid is labelled
            axes = self.axes()
            prompt, keywords = sweep_arguments(self._panel.request(), axes)
            plan = self._plan(prompt, keywords, dry_run=False)
        except Exception as exc:
            self._panel._report_error(exc, prefix="Sweep: ")
            return False
        fields = [field for field, _ in axes]
        self.sweep_result = plan
        self._cancel_requested = False
        self._task = None
        self._panel.busy = True
        self._panel._show_status(f"Sweep running: 0 of {len(plan.cells)} cells done...", "busy")
        self._future = submit(self._sweep(plan, fields))
        return True

    def cancel(self) -> int:
        """Cancel the running sweep: its queued and running requests are cancelled on the server,
        finished cells are kept. Returns 1 if a sweep was running, else 0."""
        if not self.running:
            return 0
        from .._loop import get_loop

        get_loop().call_soon_threadsafe(self._cancel_on_loop)
        return 1

    def _cancel_on_loop(self) -> None:
        # On the loop, so "started yet?" and "cancel it" cannot race.
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep has finished and been shown; False if ``timeout`` passed first."""
        import concurrent.futures

        future = self._future
        if future is None:
            return True
        done, _ = concurrent.futures.wait([future], timeout)
        return bool(done)

    # -- on the loop --------------------------------------------------------------------------

    async def _sweep(self, result: Any, fields: list[str]) -> None:
        panel = self._panel
        total = len(result.cells)
        outcome, error = "done", None
        self._task = asyncio.current_task()
        poller = asyncio.ensure_future(self._count(result, total))
        try:
            if self._cancel_requested:
                raise asyncio.CancelledError
            await result.arun()
        except asyncio.CancelledError:
            outcome = "cancelled"
            result.interrupted = True
        except Exception as exc:
            outcome, error = "failed", exc
        finally:
            poller.cancel()
            self._task = None
        done = sum(1 for cell in result.cells if cell.ok)
        failed = sum(1 for cell in result.cells if cell.status == "failed")
        try:
            if done:
                picture = await asyncio.to_thread(_grid_jpeg, result, fields)
                caption = f"sweep over {' x '.join(fields)}" + (f" ({done} of {total} cells)" if done < total else "")
                panel.grid.show_picture(picture, caption)
        except Exception as exc:  # a picture problem must not hide how the sweep went
            error = error or exc
        if outcome == "cancelled":
            panel._show_status(f"Sweep cancelled: {done} of {total} cells had finished and are kept "
                               "(running it again reuses them).", "cancelled")
        elif outcome == "failed" and error is not None:
            panel._show_status("Sweep failed: " + describe_error(error), "error")
            panel.error = error
        else:
            panel._show_status(f"Sweep done: {total} cell(s)" + (f", {failed} failed" if failed else "") + ".",
                               "error" if failed else "done")
        panel.busy = panel._runner.busy

    async def _count(self, result: Any, total: int) -> None:
        """Show "k of n cells done" while the sweep runs (polls the cells; the sweep has no callback)."""
        shown = -1
        while True:
            done = sum(1 for cell in result.cells if cell.status != "pending")
            if done != shown:
                shown = done
                failed = sum(1 for cell in result.cells if cell.status == "failed")
                self._panel._show_status(
                    f"Sweep running: {done} of {total} cells done" + (f", {failed} failed" if failed else "") + "...",
                    "busy")
            await asyncio.sleep(PROGRESS_INTERVAL)




def _grid_jpeg(result: Any, fields: list[str]) -> bytes:
    grid = result.grid(x=fields[0], y=fields[1] if len(fields) > 1 else None)
    out = io.BytesIO()
    grid.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()
