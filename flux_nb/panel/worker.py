"""Runs the panel's generations in the background, one after another, with a working Cancel.

Widget clicks are handled on the kernel's main thread, which must never wait on a generation (a
busy main thread would stop every later click, Cancel included). So a click only schedules a job on
the shared background event loop (:mod:`flux_nb._loop`) and returns at once. Jobs run one at a time
in click order: the status line stays readable and results land in the order asked. Cancelling a
job's asyncio task makes the client cancel it on the server; jobs still waiting here were never
sent, so nothing needs cancelling for them.

Hooks are called on the loop thread; ipywidgets (with ipykernel 6+) may send widget updates from any
thread, so the panel updates its widgets directly from them.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import FluxCancelledError
from ..params import FluxRequest

__all__ = ["Job", "JobRunner"]

@dataclass(eq=False)
class Job:
    """One Generate click: its request and, once finished, its outcome."""

    request: FluxRequest
    id: int  # 1, 2, ... per runner (so per panel)
    state: str = "queued"  # queued | running | done | error | cancelled
    result: Any = None
    error: BaseException | None = None
    task: "asyncio.Task | None" = field(default=None, repr=False)
    started: float | None = None  # time.monotonic() when it left the queue
    finished: float | None = None

    @property
    def elapsed(self) -> float | None:
        """Seconds from leaving the queue to finishing (None until finished)."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


class JobRunner:
    """Serial job queue on the shared loop. ``get_client`` returns an ``AsyncFluxClient``.

    Hooks (all optional): ``on_start(job)``, ``on_status(job, status)``, ``on_finish(job)`` (after
    the job's state is final), called on the loop thread; and ``prepare(job)``, called in a worker
    thread after a job succeeds and before ``on_finish``, for slow work such as decoding images into
    thumbnails that would otherwise stall every other job's network work on the loop.
    """

    def __init__(
        self,
        get_client: Callable[[], Any],
        *,
        cache: bool = True,
        on_start: Callable[[Job], None] | None = None,
        on_status: Callable[[Job, Any], None] | None = None,
        on_finish: Callable[[Job], None] | None = None,
        prepare: Callable[[Job], None] | None = None,
    ):
        self._get_client = get_client
        self.cache = cache
        self._on_start = on_start
        self._on_status = on_status
        self._on_finish = on_finish
        self._prepare = prepare
        self._jobs: list[Job] = []  # not yet finished, in click order
        self._pending = 0  # jobs whose on_finish hook has not returned yet (what wait() waits for)
        self._cond = threading.Condition()
        self._lock: asyncio.Lock | None = None  # made on the loop, on first use
        self._ids = itertools.count(1)

    # -- what the panel shows -----------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs waiting for the running one to finish."""
        with self._cond:
            return sum(1 for j in self._jobs if j.state == "queued")

    @property
    def pending(self) -> int:
        """Jobs not finished yet (running or waiting)."""
        with self._cond:
            return len(self._jobs)

    @property
    def busy(self) -> bool:
        """True while any job is running or waiting."""
        with self._cond:
            return bool(self._jobs)

    # -- control ------------------------------------------------------------------------------

    def submit(self, request: FluxRequest) -> Job:
        """Queue ``request``; returns immediately."""
        from .._loop import get_loop

        job = Job(request, next(self._ids))
        with self._cond:
            self._jobs.append(job)
            self._pending += 1
        loop = get_loop()
        loop.call_soon_threadsafe(self._spawn, job)
        return job

    def cancel_all(self) -> int:
        """Cancel the running job (on the server too) and every queued one; returns how many."""
        from .._loop import get_loop

        with self._cond:
            jobs = list(self._jobs)
        if jobs:
            get_loop().call_soon_threadsafe(self._cancel_on_loop, jobs)
        return len(jobs)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is running or queued; False if ``timeout`` passed first.

        Don't call this from the loop thread (a hook): it would wait on itself.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    # -- on the loop --------------------------------------------------------------------------

    def _spawn(self, job: Job) -> None:
        if job.state == "cancelled":  # cancelled before it was scheduled
            return
        job.task = asyncio.ensure_future(self._run(job))

    def _cancel_on_loop(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
            elif job.state == "queued":
                job.state = "cancelled"
                self._finish(job)

    async def _run(self, job: Job) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            async with self._lock:
                job.state = "running"
                job.started = time.monotonic()
                self._call(self._on_start, job)
                client = self._get_client()
                job.result = await client.generate(
                    request=job.request,
                    on_status=lambda status: self._call(self._on_status, job, status),
                    cache=self.cache,
                )
                job.state = "done"
                if self._prepare is not None:
                    try:
                        await asyncio.to_thread(self._call, self._prepare, job)
                    except asyncio.CancelledError:
                        pass  # the images are here: on_finish shows them, drawing anything not prepared
        except (asyncio.CancelledError, FluxCancelledError):
            job.state = "cancelled"
        except Exception as exc:  # shown in the panel, in words
            job.state = "error"
            job.error = exc
        finally:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        job.finished = time.monotonic()
        with self._cond:
            if job not in self._jobs:
                return
            self._jobs.remove(job)  # so the hook already sees what is left
        try:
            self._call(self._on_finish, job)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    @staticmethod
    def _call(hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:  # a broken display hook must not kill the job queue
            import logging

            logging.getLogger("flux_nb.panel").exception("panel hook failed")
