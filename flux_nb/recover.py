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

from .errors import FluxCancelledError, FluxError, FluxJobFailedError, FluxNotFoundError
from .result import FluxResult

__all__ = ["recover", "arecover", "fetch_journaled"]


async def fetch_journaled(job: Any, aio: Any, store: Any, *, warn: bool = False) -> FluxResult | None:
    """Finish one journaled job (a :class:`~flux_nb.store.PendingJob`); None if there is nothing to get.

    Saved already but never cleared from the journal: read back from disk. Otherwise fetched
    through ``aio`` (an :class:`~flux_nb.client.AsyncFluxClient`; paid for once already) and saved.
    Expired, failed or cancelled jobs are dropped from the journal; a job whose server cannot be
    reached now stays for a later try. ``warn=True`` says so with a RuntimeWarning. Every store
    call runs in a worker thread, so the event loop never waits on SQLite or the disk.
    """
    saved = await asyncio.to_thread(store.find_request_id, job.request_id)
    if saved is not None and saved.files_exist:  # saved, but the entry was never cleared
        await asyncio.to_thread(store.journal_done, job.request_id)
        return await asyncio.to_thread(saved.load)
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
        await asyncio.to_thread(store.save, result)
    await asyncio.to_thread(store.journal_done, job.request_id)
    return result


async def arecover(client: Any = None, *, include_own: bool = False, concurrency: int = 8) -> list[FluxResult]:
    """:func:`recover` for ``await``."""
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
    warning; jobs whose server cannot be reached stay for a later call.
    """
    from ._loop import run_sync

    return run_sync(arecover(client, include_own=include_own, concurrency=concurrency))
