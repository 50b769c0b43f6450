"""Fetching jobs that a crashed or restarted kernel submitted but never saved.

The client journals every job right after submitting it (:meth:`flux_nb.store.Store.journal_submit`)
and clears the entry once the images are saved. Entries left behind belong to a process that died
while its jobs ran; the server may well have finished them. :func:`recover` fetches their results
through the client (paid for once already) and saves them in the store.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from .errors import (
    FieldError,
    FluxCancelledError,
    FluxError,
    FluxJobFailedError,
    FluxNotFoundError,
    FluxStoreError,
    FluxValidationError,
)
from .result import FluxResult

__all__ = ["recover", "arecover", "fetch_journaled"]


async def fetch_journaled(job: Any, aio: Any, store: Any, *, warn: bool = False) -> FluxResult | None:
    """Finish one journaled job (a :class:`~flux_nb.store.PendingJob`); None if there is nothing to get.

    Saved already but never cleared from the journal: read back from disk. Otherwise fetched
    through ``aio`` (an :class:`~flux_nb.client.AsyncFluxClient`; paid for once already) and saved.
    Expired, failed or cancelled jobs are dropped from the journal; a job whose server cannot be
    reached now stays for a later try, and so does one whose images cannot be saved now (the
    fetched result is returned, its images in memory only). ``warn=True`` says so with a
    RuntimeWarning. Every store call runs in a worker thread, so the event loop never waits on
    SQLite or the disk.
    """
    saved = await asyncio.to_thread(store.find_request_id, job.request_id)
    if saved is not None and saved.files_exist:  # saved, but the entry was never cleared
        try:
            loaded = await asyncio.to_thread(saved.load)
        except OSError:
            loaded = None  # deleted since: fetch it again below
        if loaded is not None:
            await asyncio.to_thread(store.journal_done, job.request_id)
            return loaded
    try:
        result = await aio.fetch(job.handle_info, job.request)
    except (FluxNotFoundError, FluxJobFailedError, FluxCancelledError) as exc:
        # expired (fal keeps results for minutes to an hour), failed or cancelled: nothing to get
        await asyncio.to_thread(store.journal_done, job.request_id)
        if warn:
            warnings.warn(f"could not recover request {job.request_id}: {exc}", RuntimeWarning, stacklevel=2)
        return None
    except FluxError as exc:
        # the server is unreachable now (or the job is another server's): keep the entry
        if warn:
            warnings.warn(f"could not recover request {job.request_id} now: {exc}", RuntimeWarning, stacklevel=2)
        return None
    if not all(im.path is not None for im in result.images):
        # the client saves what it fetches; a save_error means it tried and the disk said no
        error = getattr(result, "save_error", None)
        if error is None:
            try:
                await asyncio.to_thread(store.save, result)
            except FluxStoreError as exc:
                error = str(exc)
        if error is not None:
            # keep the entry: a later recover() can fetch and save it while the server keeps it
            if warn:
                warnings.warn(
                    f"recovered request {job.request_id} but could not save its images ({error}); "
                    "they are in memory only and the job stays in the journal",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return result
    await asyncio.to_thread(store.journal_done, job.request_id)
    return result


def _check_concurrency(concurrency: object) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise FluxValidationError(
            [FieldError("concurrency", concurrency, "must be a whole number of at least 1 (jobs fetched at once)")]
        )
    return concurrency


async def arecover(client: Any = None, *, include_own: bool = False, concurrency: int = 8) -> list[FluxResult]:
    """:func:`recover` for ``await``."""
    concurrency = _check_concurrency(concurrency)
    if client is None:
        from .client import get_client

        client = get_client()
    aio = getattr(client, "aio", client)
    store = getattr(aio, "store", None)
    if store is None or not hasattr(store, "pending"):
        from .store import get_store

        store = get_store()
    jobs = await asyncio.to_thread(store.pending, include_own=include_own)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job) -> FluxResult | None:
        async with semaphore:
            return await fetch_journaled(job, aio, store, warn=True)

    found = await asyncio.gather(*(one(job) for job in jobs))
    return [r for r in found if r is not None]


def recover(client: Any = None, *, include_own: bool = False, concurrency: int = 8) -> list[FluxResult]:
    """Fetch and save the results of journaled jobs that were never saved; return them.

    Jobs this process submitted itself (still running here) are left alone unless
    ``include_own=True``. Expired, failed or cancelled jobs are dropped from the journal with a
    warning; jobs whose server cannot be reached, or whose images cannot be saved now, stay for a
    later call. ``concurrency`` (a whole number, at least 1) is how many jobs are fetched at once;
    anything else is a :class:`~flux_nb.errors.FluxValidationError`.
    """
    from ._loop import run_sync

    _check_concurrency(concurrency)

    return run_sync(arecover(client, include_own=include_own, concurrency=concurrency))
