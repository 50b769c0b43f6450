"""The sweep functions users call: :func:`sweep`, :func:`asweep`, :func:`prompt_sweep`, :func:`guidance_sweep`."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import FieldError, FluxValidationError
from .plan import build_plan, template_slots
from .result import SweepCell, SweepResult
from .runner import Runner, client_origin

__all__ = ["sweep", "asweep", "prompt_sweep", "guidance_sweep", "plan_sweep"]

#: A dry run may describe sweeps bigger than ``max_cells``, up to this many cells.
DRY_RUN_LIMIT = 100_000


def plan_sweep(
    prompt: Any,
    *,
    dry_run: bool = False,
    cache: bool = True,
    vary_seed: bool = False,
    new_seed: bool = False,
    concurrency: int | None = None,
    max_cells: int | None = 256,
    client: Any = None,
    progress: bool = True,
    live: bool = True,
    variables: Mapping[str, Any] | None = None,
    **axes_and_fields: Any,
) -> SweepResult:
    """The sweep's cells, all pending, with a runner attached; nothing is sent."""
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise FluxValidationError([FieldError("concurrency", concurrency, "must be a whole number of at least 1", "range")])
    runner = Runner(client, cache=cache, concurrency=concurrency, progress=progress, live=live)
    aio = getattr(client, "aio", client) if client is not None else None
    store = runner.store(aio)
    limit = max_cells
    if dry_run and max_cells is not None:
        limit = max(max_cells, DRY_RUN_LIMIT)  # a dry run is how one sees an oversized sweep's cost
    plan = build_plan(
        prompt,
        axes_and_fields,
        variables=variables,
        vary_seed=vary_seed,
        max_cells=limit,
        store=store,
        new_seed=new_seed,
    )
    cells = [
        SweepCell(index=k, request=req, values=values, coords=coords)
        for k, (req, values, coords) in enumerate(zip(plan.requests, plan.values, plan.coords))
    ]
    cached = None
    if dry_run and cache:
        # the default client is made (not started) only to know where it would send the cells
        origin = client_origin(aio if aio is not None else runner.aio())
        cached = store.has_many([c.request for c in cells], origin=origin)  # one connection for them all
    return SweepResult(
        plan.axes, cells, seed=plan.seed, seed_source=plan.seed_source, dry_run=dry_run, cached_flags=cached,
        runner=runner,
    )


def sweep(
    prompt: Any,
    *,
    dry_run: bool = False,
    cache: bool = True,
    vary_seed: bool = False,
    new_seed: bool = False,
    concurrency: int | None = None,
    max_cells: int | None = 256,
    client: Any = None,
    progress: bool = True,
    live: bool = True,
    **axes_and_fields: Any,
) -> SweepResult:
    """Generate every combination of the given axes and return the cells as a :class:`SweepResult`.

    A keyword is an axis when its value is a list, tuple or range, or (for numeric fields) a value
    string in the A1111 grammar: ``"2,3.5,5"``, ``"1-5"``, ``"1-9 (+2)"``, ``"0-1 [5]"``. Other
    keywords are fixed request fields (aliases like ``steps``, ``guidance``, ``size`` work). The
    prompt may be a list or use variants (``"a {red|blue} car"``); both make a prompt axis.
    ``lora=[None, "a.safetensors"]`` sweeps a LoRA on/off; ``lora_scale=[0.5, 1]`` its scale.

    One seed is shared by every cell unless ``seed`` is an axis or ``vary_seed=True``. Without a
    seed, one is drawn once and remembered for this sweep, so re-running it reuses the finished
    cells. ``cache=False`` generates every cell anew with the same seed; ``new_seed=True`` draws
    a new seed and remembers it instead; ``seed=`` uses that seed and leaves the remembered one
    alone.

    ``dry_run=True`` sends nothing and reports requests, images, megapixels and estimated cost.
    Sweeps over ``max_cells`` cells are refused. ``concurrency`` bounds requests in flight
    (default 16). Ctrl-C cancels queued jobs on the server and raises
    :class:`~flux_nb.sweeps.SweepInterrupted`, whose ``.result`` keeps the finished cells.

    Example::

        r = flux_nb.sweep("a red fox in snow", guidance="2-6 [5]", seed=[1, 2, 3])
        r.grid()
    """
    result = plan_sweep(
        prompt, dry_run=dry_run, cache=cache, vary_seed=vary_seed, new_seed=new_seed, concurrency=concurrency,
        max_cells=max_cells,
        client=client, progress=progress, live=live, **axes_and_fields,
    )
    if not dry_run:
        result._runner.run(result, result.cells)
    return result


async def asweep(
    prompt: Any,
    *,
    dry_run: bool = False,
    cache: bool = True,
    vary_seed: bool = False,
    new_seed: bool = False,
    concurrency: int | None = None,
    max_cells: int | None = 256,
    client: Any = None,
    progress: bool = True,
    live: bool = True,
    **axes_and_fields: Any,
) -> SweepResult:
    """:func:`sweep` for ``await`` (the running loop does the work); cancelling the task cancels the jobs."""
    result = plan_sweep(
        prompt, dry_run=dry_run, cache=cache, vary_seed=vary_seed, new_seed=new_seed, concurrency=concurrency,
        max_cells=max_cells,
        client=client, progress=progress, live=live, **axes_and_fields,
    )
    if not dry_run:
        from .._loop import run_in_loop

        # the client lives on flux-nb's own loop; hop there from Jupyter's
        await run_in_loop(result._runner.arun(result, result.cells))
    return result


def prompt_sweep(template: str, **variables_and_options: Any) -> SweepResult:
    """Fill the ``{name}`` slots of ``template``; list values make axes, in keyword order.

    ``prompt_sweep("a {animal} in {style} style", animal=["cat", "fox"], style=["ink", "oil"])``.
    Keywords that are not slots of the template are passed to :func:`sweep` (fields, other axes and
    options such as ``seed`` or ``dry_run``). Variants (``{a|b}``) in the template still work.
    """
    slots = template_slots(template)
    variables = {k: v for k, v in variables_and_options.items() if k in slots}
    rest = {k: v for k, v in variables_and_options.items() if k not in slots}
    missing = [s for s in slots if s not in variables]
    if missing:
        raise FluxValidationError(
            [FieldError(name, None, f"the template has a {{{name}}} slot but no {name}= value was given", "missing")
             for name in missing]
        )
    options = {k: rest.pop(k) for k in list(rest) if k in _OPTIONS}
    result = plan_sweep(template, variables=variables, **options, **rest)
    if not result.dry_run:
        result._runner.run(result, result.cells)
    return result


_OPTIONS = ("dry_run", "cache", "vary_seed", "new_seed", "concurrency", "max_cells", "client", "progress", "live")


def guidance_sweep(prompt: Any, scales: Any, **fields: Any) -> SweepResult:
    """``sweep(prompt, guidance_scale=scales, **fields)``: scales as a list or a grammar string (``"2-6 [5]"``)."""
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = [scales]
    return sweep(prompt, guidance_scale=scales, **fields)
