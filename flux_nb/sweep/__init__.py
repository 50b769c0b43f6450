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

import sys
import types
from typing import Any

from .api import asweep, guidance_sweep, plan_sweep, prompt_sweep, sweep
from .grammar import parse_values
from .plan import Axis, SweepSummary, parse_axis_values
from .result import SweepCell, SweepResult
from .runner import DEFAULT_CONCURRENCY, SweepInterrupted

__all__ = [
    "Axis",
    "DEFAULT_CONCURRENCY",
    "SweepCell",
    "SweepInterrupted",
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


class _CallableModule(types.ModuleType):
    """``flux_nb.sweep`` is both this package and the function: importing a submodule such as
    ``flux_nb.sweep.grammar`` binds the package to the name ``flux_nb.sweep``, so the package must
    be callable for ``flux_nb.sweep(...)`` to keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
