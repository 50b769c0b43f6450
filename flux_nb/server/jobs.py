"""The job queue: a real FIFO with a bounded pool of workers running the engine in threads.

Every state change of a job (queued -> in progress -> completed, a new log line, a move in the
queue) wakes whoever waits on it, so status streams push changes without polling. All job state is
touched only on the server's event loop; engine threads reach it through ``call_soon_threadsafe``.

Lifecycle of a job::

    IN_QUEUE --(worker free)--> IN_PROGRESS --(engine returns)--> COMPLETED (outcome "ok")
        |                           |--(engine raises)----------> COMPLETED (outcome "error")
        '--(cancel)--> COMPLETED    '--(cancel, at the engine's next check)--> COMPLETED ("cancelled")

Finished jobs are kept ``result_ttl`` seconds, then forgotten (their files deleted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import FieldError
from ..params import LIMITS, FluxRequest
from . import protocol as P
from .engines.base import Engine, EngineInputError, EngineOutput, JobCancelled, JobContext
from .stats import ServerStats
from .storage import FileStore

__all__ = ["Job", "JobQueue", "StoredImage", "CANCEL_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]

logger = logging.getLogger("flux_nb.server")

CANCEL_REQUESTED = "CANCELLATION_REQUESTED"
ALREADY_COMPLETED = "ALREADY_COMPLETED"
NOT_FOUND = "NOT_FOUND"

#: Seeds the server picks when the request has none (fal reports 32-bit-ish seeds too).
_SEED_RANGE = min(2**32, int(LIMITS["seed"][1]))
#: Simulated latency sleeps in steps this long, checking for cancellation between them.
_LATENCY_STEP = 0.02


@dataclass
class StoredImage:
    """One finished image: where it is kept (``relpath``) or, for sync_mode, its bytes."""

    file_name: str
    content_type: str
    width: int
    height: int
    file_size: int
    relpath: str | None = None
    data: bytes | None = None


@dataclass(eq=False)
class Job:
    request_id: str
    app_id: str
    request: FluxRequest
    seed: int
    priority: str = "normal"
    start_deadline: float | None = None
    status: str = P.IN_QUEUE
    outcome: str | None = None  # "ok" | "error" | "cancelled" once COMPLETED
    logs: list[P.LogEntry] = field(default_factory=list)
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    inference_time: float | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int | None = None  # HTTP status the result endpoint replays for a failed job
    error_detail: Any = None
    images: list[StoredImage] = field(default_factory=list)
    has_nsfw_concepts: list[bool] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cancel_requested: bool = False  # read from the engine thread; a plain bool is enough
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def done(self) -> bool:
        return self.status == P.COMPLETED

    def changed(self) -> asyncio.Event:
        """An event set at this job's next change. Take it *before* reading the state."""
        return self._changed

    def notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    def add_log(self, message: str, level: str = "INFO") -> None:
        self.logs.append(P.LogEntry(message=message, level=level, timestamp=P.iso_now()))
        self.notify()

    async def wait_done(self) -> None:
        while not self.done:
            event = self.changed()
            if self.done:
                return
            await event.wait()


class JobQueue:
    """Queue + workers for one engine. Start it on the loop that will serve it (:meth:`start`)."""

    def __init__(
        self,
        engine: Engine,
        files: FileStore,
        *,
        workers: int = 2,
        latency: float = 0.0,
        result_ttl: float = 3600.0,
        stats: ServerStats | None = None,
        resolve_file: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if workers < 1:
            raise ValueError(f"workers={workers!r}: must be at least 1")
        limit = getattr(engine, "max_concurrency", None)
        self.engine = engine
        self.files = files
        self.workers = min(workers, limit) if limit else workers
        self.latency = max(0.0, float(latency))
        self.result_ttl = float(result_ttl)
        self.stats = stats if stats is not None else ServerStats()
        self._resolve_file = resolve_file or _no_files
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._running: set[Job] = set()
        self._cond: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # One engine thread per worker: asyncio's default executor has only cpu_count + 4 threads,
        # which would quietly cap a server with more workers (6 on a 2-core machine).
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self.closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers on the running loop (idempotent; called lazily by :meth:`submit`)."""
        if self._tasks or self.closed:
            return
        self._loop = asyncio.get_running_loop()
        self._cond = asyncio.Condition()
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="flux-nb-engine")
        self._tasks = [asyncio.create_task(self._worker(), name=f"flux-nb-worker-{i}") for i in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._sweeper(), name="flux-nb-sweeper"))

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop: queued jobs are cancelled, running ones asked to stop and awaited up to ``timeout``."""
        if self.closed:
            return
        self._closing = True
        for job in list(self._waiting):
            self._finish_cancelled(job, "server shutting down")
        self._waiting.clear()
        for job in self._running:
            job.cancel_requested = True
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()
        workers = self._tasks[:-1]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout)
            for task in pending:
                task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # a worker cancelled mid-job leaves its job unfinished: close it for any waiting stream
        for job in list(self._running):
            self._finish_cancelled(job, "server shutting down")
        self._running.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self.closed = True

    # -- submitting and looking up ------------------------------------------------------------

    async def submit(
        self,
        request: FluxRequest,
        app_id: str,
        *,
        priority: str = "normal",
        start_timeout: float | None = None,
    ) -> Job:
        """Queue a validated request. The seed is fixed now (picked if the request has none)."""
        if self._closing:
            raise RuntimeError("the server is shutting down")
        self.start()
        self._purge()
        now = self._clock()
        seed = request.seed if request.seed is not None else secrets.randbelow(_SEED_RANGE)
        job = Job(
            request_id=str(uuid.uuid4()),
            app_id=app_id,
            request=request,
            seed=seed,
            priority="low" if priority == "low" else "normal",
            start_deadline=now + start_timeout if start_timeout else None,
            submitted_at=now,
        )
        self._jobs[job.request_id] = job
        self.stats.record_submission(request.cache_key())
        # low-priority jobs wait behind every normal one
        index = len(self._waiting)
        if job.priority == "normal":
            index = next((i for i, j in enumerate(self._waiting) if j.priority == "low"), index)
        self._waiting.insert(index, job)
        self._notify_positions(index + 1)
        job.add_log(f"queued at position {index}")
        assert self._cond is not None
        async with self._cond:
            self._cond.notify()
        return job

    def get(self, request_id: str) -> Job | None:
        self._purge()
        return self._jobs.get(request_id)

    def position(self, job: Job) -> int | None:
        try:
            return self._waiting.index(job)
        except ValueError:
            return None

    @property
    def accepting(self) -> bool:
        """False once shutdown has begun."""
        return not self._closing

    @property
    def queue_length(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def cancel(self, request_id: str) -> str:
        """Cancel a job: a queued one never runs; a running one stops at the engine's next check."""
        job = self.get(request_id)
        if job is None:
            return NOT_FOUND
        if job.done:
            return ALREADY_COMPLETED
        if job in self._waiting:
            index = self._waiting.index(job)
            self._waiting.remove(job)
            self._notify_positions(index)
            self._finish_cancelled(job, "cancelled while queued")
        else:
            if not job.cancel_requested:
                job.add_log("cancellation requested")
            job.cancel_requested = True
        return CANCEL_REQUESTED

    # -- workers ------------------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._cond is not None
        while True:
            async with self._cond:
                await self._cond.wait_for(lambda: bool(self._waiting) or self._closing)
                if self._closing:
                    return
                job = self._waiting.pop(0)
                self._notify_positions(0)
            await self._run(job)

    async def _run(self, job: Job) -> None:
        if job.start_deadline is not None and self._clock() > job.start_deadline:
            self._finish_failed(job, 504, ERROR_START_TIMEOUT_MSG, P.ERROR_START_TIMEOUT, ERROR_START_TIMEOUT_MSG)
            return
        loop = asyncio.get_running_loop()
        self._running.add(job)
        job.status = P.IN_PROGRESS
        job.started_at = self._clock()
        job.add_log(f"started on the {self.engine.name} engine (seed {job.seed})")

        def log_from_thread(message: str) -> None:
            loop.call_soon_threadsafe(job.add_log, str(message))

        ctx = JobContext(
            request_id=job.request_id,
            log=log_from_thread,
            is_cancelled=lambda: job.cancel_requested,
            resolve_file=self._resolve_file,
        )
        try:
            assert self._executor is not None
            images, output = await loop.run_in_executor(self._executor, self._work, job, ctx)
        except JobCancelled:
            self._finish_cancelled(job, "cancelled while running")
        except EngineInputError as exc:
            detail = [FieldError(exc.field, exc.value, exc.message).to_fal()]
            self._finish_failed(job, 422, f"{exc.field}: {exc.message}", P.ERROR_VALIDATION, detail)
        except asyncio.CancelledError:
            # shutdown gave up waiting: the thread stops at its next check; the job ends now
            job.cancel_requested = True
            self._finish_cancelled(job, "server shutting down")
            raise
        except Exception as exc:  # the engine crashed: report it on the job, keep serving
            logger.exception("job %s failed", job.request_id)
            message = f"{type(exc).__name__}: {exc}"
            self._finish_failed(job, 500, message, P.ERROR_INTERNAL, message)
        else:
            job.images = images
            job.has_nsfw_concepts = list(output.has_nsfw_concepts)
            job.timings = dict(output.timings)
            self._finish(job, "ok")
            self.stats.jobs_completed += 1
            job.add_log(f"completed: {len(images)} image(s)")
        finally:
            self._running.discard(job)

    def _work(self, job: Job, ctx: JobContext) -> tuple[list[StoredImage], EngineOutput]:
        """Runs in a worker thread: the engine, then the rest of the simulated latency, then the files.

        ``latency`` is the work per image, the engine's own time included: like a GPU job that
        takes that long, so a server-bound client ideal (jobs / workers x latency) is reachable.
        """
        request = job.request
        ctx.check_cancelled()
        started = time.monotonic()
        output = self.engine.generate(request, job.seed, ctx)
        if self.latency:
            left = self.latency * request.num_images - (time.monotonic() - started)
            for i in range(request.num_images):
                ctx.log(f"simulated work for image {i + 1}/{request.num_images} ({self.latency:g} s)")
                _sleep_checking(max(0.0, left / request.num_images), ctx)
        ctx.check_cancelled()
        images = []
        for i, image in enumerate(output.images):
            ext = "png" if image.content_type == "image/png" else "jpeg"
            name = f"{job.request_id}-{i}.{ext}"
            stored = StoredImage(name, image.content_type, image.width, image.height, len(image.data))
            if request.sync_mode:
                stored.data = image.data  # answered inline, never written (like fal's request history)
            else:
                stored.relpath = self.files.save_result(job.request_id, name, image.data)
            images.append(stored)
        return images, output

    # -- finishing ----------------------------------------------------------------------------

    def _finish(self, job: Job, outcome: str) -> None:
        job.status = P.COMPLETED
        job.outcome = outcome
        job.finished_at = self._clock()
        if job.started_at is not None:
            job.inference_time = job.finished_at - job.started_at
        job.notify()

    def _finish_cancelled(self, job: Job, why: str) -> None:
        if job.done:
            return
        job.error, job.error_type, job.error_status = "Request was cancelled", P.ERROR_CANCELLED, 400
        job.error_detail = "Request was cancelled"
        job.add_log(why)
        self._finish(job, "cancelled")
        self.stats.jobs_cancelled += 1

    def _finish_failed(self, job: Job, status: int, error: str, error_type: str, detail: Any) -> None:
        job.error, job.error_type, job.error_status, job.error_detail = error, error_type, status, detail
        job.add_log(error, level="ERROR")
        self._finish(job, "error")
        self.stats.jobs_failed += 1

    def _notify_positions(self, start: int) -> None:
        for job in self._waiting[start:]:
            job.notify()

    # -- expiry -------------------------------------------------------------------------------

    def _purge(self) -> None:
        now = self._clock()
        expired = [j for j in self._jobs.values() if j.finished_at is not None and now - j.finished_at > self.result_ttl]
        for job in expired:
            del self._jobs[job.request_id]
            self.files.delete_results(job.request_id)

    async def _sweeper(self) -> None:
        # expired jobs are also dropped lazily on every lookup; this only frees their files
        interval = min(60.0, max(0.05, self.result_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            self._purge()


ERROR_START_TIMEOUT_MSG = "Request timed out before it started (X-Fal-Request-Timeout)"


def _sleep_checking(seconds: float, ctx: JobContext) -> None:
    deadline = time.monotonic() + seconds
    while True:
        ctx.check_cancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(_LATENCY_STEP, left))


def _no_files(path: str) -> Any:
    raise EngineInputError("loras", path, "this server has no files to resolve")
