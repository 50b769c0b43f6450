"""Parameter sweeps: any request field as an axis, labelled grids, cache and resume.

::

    import flux_nb
    r = flux_nb.sweep("a {red|blue} fox", guidance="2-6 [5]", seed=[1, 2])
    r.grid()                       # labelled contact sheet (PIL)
    r.save("fox-sweep")            # images with metadata, grid.png, manifest.json / .csv

See ``docs/sweeps.md``. Modules: :mod:`.grammar` (the A1111 value grammar), :mod:`.plan` (axes,
cells, seed policy, cost), :mod:`.runner` (concurrent execution), :mod:`.result`
(:class:`SweepResult`), :mod:`.grid` and :mod:`.figure` (pictures).
"""

from __future__ import annotations

from .api import asweep, guidance_sweep, plan_sweep, prompt_sweep, sweep
from .grammar import parse_values
from .plan import Axis, SweepSummary, parse_axis_values
from .result import SweepCell, SweepPage, SweepResult
from .runner import DEFAULT_CONCURRENCY, SweepInterrupted

__all__ = [
    "Axis",
    "DEFAULT_CONCURRENCY",
    "SweepCell",
    "SweepInterrupted",
    "SweepPage",
    "SweepResult",
    "SweepSummary",
    "asweep",
    "guidance_sweep",
    "parse_axis_values",
    "parse_values",
    "plan_sweep",
    "prompt_sweep",
    "sweep",
]
