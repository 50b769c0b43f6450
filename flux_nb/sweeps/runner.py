"""Running a sweep's cells: all at once on the shared event loop, a bounded number in flight.

Each cell is, in order of preference: a finished generation from the store (no request), the result
of a job journaled by a process that died (fetched, not paid for again), or a new generation from
the client. A failing cell is marked with its error and the others go on. Cancelling (Ctrl-C)
cancels every task; the async client cancels each job on the server when its task is cancelled;
what finished stays finished.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .result import SweepCell, SweepResult

if TYPE_CHECKING:  # pragma: no cover
    from ..params import FluxRequest
    from ..result import FluxResult
    from ..store import PendingJob, Store

__all__ = ["DEFAULT_CONCURRENCY", "SweepInterrupted", "Runner", "client_origin", "run_cells"]

#: Cells in flight at once unless ``concurrency=`` says otherwise.
DEFAULT_CONCURRENCY = 16
#: Seconds between redraws of the live grid in a notebook.
LIVE_INTERVAL = 1.0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep. ``result`` holds the cells that finished (the rest are cancelled).

    Still a KeyboardInterrupt, so scripts stop; re-running the same sweep resumes from the cache.
    """

    def __init__(self, result: SweepResult):
        summary = result.summary()
        super().__init__(
            f"sweep interrupted: {summary.done} of {summary.cells} cells finished; "
            "the error's .result has them, and re-running the sweep resumes from the cache"
        )
        self.result = result


def client_origin(aio: Any) -> str:
    """Where ``aio`` sends its requests (:func:`flux_nb.store.backend_origin`): the cache's scope."""
    from ..store import backend_origin

    return backend_origin(getattr(aio, "backend", None), getattr(aio, "app_id", None))


async def obtain(
    request: "FluxRequest",
    aio: Any,
    store: "Store",
    cache: bool,
    *,
    in_store: bool | None = None,
    journaled: "Sequence[PendingJob] | None" = None,
) -> "tuple[FluxResult, float | None]":
    """One cell's generation: from the store, from a dead process's journaled job, or generated.

    ``in_store`` and ``journaled`` are what a batched check found before the sweep started
    (:meth:`Store.has_many`, :meth:`Store.pending`): False / a list skip asking the store again;
    None asks it. Returns the generation with the seconds from submitting the request to having
    its images (None when nothing was submitted).
    """
    if cache:
        if in_store is not False:
            hit = await asyncio.to_thread(store.lookup, request, origin=client_origin(aio))
            if hit is not None:
                return hit, None
        if getattr(aio, "fetch", None) is not None:
            from ..recover import fetch_journaled

            if journaled is None:
                journaled = await asyncio.to_thread(store.pending, request, include_own=False)
            for job in journaled:
                result = await fetch_journaled(job, aio, store)
                if result is not None:
                    return result, None
    started = time.monotonic()
    # the cache was checked just above (or is not wanted): the client need not look again
    result = await aio.generate(request=request, cache=False)
    return result, (None if result.cached else time.monotonic() - started)


async def _batched_checks(
    groups: "dict[str, list[SweepCell]]", aio: Any, store: "Store"
) -> "tuple[list[bool], dict[str, list[PendingJob]]]":
    """For every group: is it in the store, and which dead processes' jobs are journaled for it.

    Two store calls for the whole sweep instead of two per cell.
    """
    requests = [g[0].request for g in groups.values()]
    in_store = await asyncio.to_thread(store.has_many, requests, origin=client_origin(aio))
    journaled: dict[str, list[PendingJob]] = {}
    if getattr(aio, "fetch", None) is not None:
        for job in await asyncio.to_thread(store.pending, include_own=False):
            if job.request.seed is not None:
                journaled.setdefault(job.request.cache_key(), []).append(job)
    return in_store, journaled


async def run_cells(
    cells: Sequence[SweepCell],
    aio: Any,
    *,
    store: "Store",
    cache: bool = True,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[SweepCell], None] | None = None,
) -> None:
    """Run ``cells`` with at most ``concurrency`` requests in flight; each cell ends done, cached,
    failed or cancelled. Identical cells (same :attr:`SweepCell.key`) are one request: it runs once
    and they share its result. ``on_done`` is called (on the loop) as each cell finishes."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r}: must be at least 1")
    semaphore = asyncio.Semaphore(concurrency)
    groups: dict[str, list[SweepCell]] = {}
    for cell in cells:
        groups.setdefault(cell.key, []).append(cell)
    if cache:
        in_store, journaled = await _batched_checks(groups, aio, store)
    else:
        in_store, journaled = [False] * len(groups), {}

    async def one(group: list[SweepCell], found: bool) -> None:
        first = group[0]
        try:
            async with semaphore:
                result, wall_time = await obtain(
                    first.request, aio, store, cache, in_store=found, journaled=journaled.get(first.key, [])
                )
                await asyncio.to_thread(first.finish, result, wall_time=wall_time)
        except asyncio.CancelledError:
            for cell in group:
                cell.cancel()
            raise
        except Exception as exc:  # fail-soft: the cell keeps its error, the sweep goes on
            first.fail(exc)
        for cell in group[1:]:
            cell.share(first)
        if on_done is not None:
            for cell in group:
                try:
                    on_done(cell)
                except Exception:  # a display problem must not fail the cell
                    pass

    tasks = [asyncio.ensure_future(one(g, found)) for g, found in zip(groups.values(), in_store)]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        # let every task finish cancelling, so the client has cancelled its job on the server
        await asyncio.gather(*tasks, return_exceptions=True)
        for cell in cells:
            cell.cancel()
        raise


def _in_notebook() -> bool:
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


class _LiveView:
    """The grid in the notebook output, redrawn at most once per interval as cells finish.

    Drawing the grid (dozens of thumbnails, JPEG-encoded) takes long enough to stall every
    request in flight on the shared loop, so it is drawn in a worker thread; only the cheap
    display update runs on the loop. At most one redraw is in flight; updates meanwhile are dropped.
    """

    def __init__(self, result: SweepResult, interval: float | None = None):
        self.result = result
        self.interval = LIVE_INTERVAL if interval is None else interval
        self.last = 0.0
        self.handle: Any = None
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Show the (empty) grid; call on the loop before the cells run."""
        from IPython.display import display

        bundle = await asyncio.to_thread(self.result._repr_mimebundle_)
        self.handle = display(bundle, raw=True, display_id=True)
        self.last = time.monotonic()

    def update(self) -> None:
        """Start a redraw if the interval has passed and none is in flight; returns at once (on the loop)."""
        if self.handle is None or (self._task is not None and not self._task.done()):
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._task = asyncio.ensure_future(self._redraw())

    async def _redraw(self) -> None:
        try:
            bundle = await asyncio.to_thread(self.result._repr_mimebundle_)
            self.handle.update(bundle, raw=True)
        except Exception:  # a display problem must not fail the sweep
            pass

    def finish(self) -> None:
        # a redraw still in flight must not replace the summary when it lands
        if self._task is not None:
            self._task.cancel()
        if self.handle is None:
            return
        # the returned result displays itself: leave one summary line here, not a second grid
        self.handle.update({"text/plain": f"sweep finished: {self.result.summary()}"}, raw=True)


class Runner:
    """How a sweep result runs its cells: the client, cache policy, concurrency and display."""

    def __init__(
        self,
        client: Any = None,
        *,
        cache: bool = True,
        concurrency: int | None = None,
        progress: bool = True,
        live: bool = True,
    ):
        self.client = client
        self.cache = cache
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        self.progress = progress
        self.live = live

    def aio(self) -> Any:
        """The async client (``client.aio`` of a sync client; the default client when none given)."""
        client = self.client
        if client is None:
            from ..client import get_client

            client = get_client()
        return getattr(client, "aio", client)

    def store(self, aio: Any = None) -> "Store":
        from ..store import get_store

        store = getattr(aio, "store", None) if aio is not None else None
        return store if store is not None and hasattr(store, "lookup") else get_store()

    async def _hooks(self, result: SweepResult, cells: Sequence[SweepCell]):
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(cells), desc="sweep", unit="cell")
        view = _LiveView(result) if self.live and _in_notebook() else None
        if view is not None:
            await view.start()

        def on_done(cell: SweepCell) -> None:
            if bar is not None:
                bar.update(1)
                if cell.status == "failed":
                    bar.set_postfix(failed=sum(c.status == "failed" for c in cells), refresh=False)
            if view is not None:
                view.update()

        def close() -> None:
            if bar is not None:
                bar.close()
            if view is not None:
                view.finish()

        return on_done, close

    async def arun(self, result: SweepResult, cells: Sequence[SweepCell]) -> None:
        """Run ``cells`` of ``result`` on the running loop (for ``await`` in notebooks)."""
        aio = self.aio()
        on_done, close = await self._hooks(result, cells)
        try:
            await run_cells(
                cells, aio, store=self.store(aio), cache=self.cache, concurrency=self.concurrency, on_done=on_done
            )
        finally:
            close()

    def run(self, result: SweepResult, cells: Sequence[SweepCell]) -> None:
        """Run ``cells`` of ``result`` on the shared background loop and wait; Ctrl-C cancels them
        and raises :class:`SweepInterrupted` carrying the result."""
        from .._loop import run_sync

        try:
            run_sync(self.arun(result, cells))
        except KeyboardInterrupt as exc:
            for cell in cells:
                cell.cancel()
            result.interrupted = True
            raise SweepInterrupted(result) from exc
