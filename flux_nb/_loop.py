"""One background event loop for the whole process, so the sync API works everywhere.

Jupyter already runs an asyncio loop in the kernel's main thread, where ``asyncio.run()`` fails.
flux-nb therefore runs all its network work on a single daemon thread with its own loop: the sync
API blocks on it from any thread, the panel schedules work on it without blocking the kernel, and
connections are reused across calls because every call shares that loop's HTTP client.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Coroutine, TypeVar

__all__ = ["get_loop", "run_sync", "submit", "in_loop_thread"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None

#: Seconds to let cancelled work (e.g. cancelling a job on the server) finish after Ctrl-C.
CANCEL_GRACE = 15.0


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=_run, name="flux-nb-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> "asyncio.Future[T]":
    """Schedule ``coro`` on the shared loop; returns a concurrent future (non-blocking)."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())  # type: ignore[return-value]


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` on the shared loop and block until it finishes.

    Ctrl-C (or Jupyter's stop button) cancels the task -- the client then cancels its job on the
    server -- waits briefly for that clean-up, and re-raises KeyboardInterrupt.
    """
    if in_loop_thread():
        if asyncio.iscoroutine(coro):
            coro.close()
        raise RuntimeError("flux-nb's sync API was called from its own event loop; use the async API there")
    done = threading.Event()
    box: dict[str, Any] = {}

    async def runner() -> None:
        try:
            box["value"] = await coro
        except BaseException as exc:  # handed to the calling thread below
            box["error"] = exc
        finally:
            done.set()

    future = asyncio.run_coroutine_threadsafe(runner(), get_loop())
    try:
        done.wait()
    except KeyboardInterrupt:
        future.cancel()
        done.wait(CANCEL_GRACE)
        raise
    if "error" in box:
        error = box.pop("error")
        if isinstance(error, asyncio.CancelledError):
            from .errors import FluxCancelledError

            raise FluxCancelledError("the operation was cancelled") from None
        raise error
    return box["value"]


async def run_in_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the shared loop from any other loop (e.g. Jupyter's, with top-level await)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = get_loop()
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
