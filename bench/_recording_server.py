"""``flux-nb serve`` that also records when each job finished, for completion-latency benchmarks.

    FLUX_NB_BENCH_FINISH_LOG=/tmp/finish.log python -m _recording_server --port 0 --latency 0.2

Takes ``flux-nb serve``'s options. Each finished job appends ``<request_id> <monotonic seconds>`` to
the log, stamped at the moment the server marks the job COMPLETED (what status streams and polls
then report). ``time.monotonic()`` is the system-wide CLOCK_MONOTONIC on Linux, so the client
process can subtract its own readings. Bench-only: it wraps a private method of the job queue.
"""

from __future__ import annotations

import os
import sys
import time

from flux_nb.server import jobs
from flux_nb.server.cli import serve_main


def install(path: str) -> None:
    original = jobs.JobQueue._finish
    log = open(path, "a", buffering=1)  # line-buffered: the client reads it while we run

    def _finish(self: jobs.JobQueue, job: jobs.Job, outcome: str) -> None:
        original(self, job, outcome)
        log.write(f"{job.request_id} {time.monotonic()!r}\n")

    jobs.JobQueue._finish = _finish  # type: ignore[method-assign]


def read_finish_times(path: str) -> dict[str, float]:
    """request_id -> monotonic time the server completed it."""
    times: dict[str, float] = {}
    try:
        with open(path) as f:
            for line in f:
                request_id, _, stamp = line.strip().partition(" ")
                if stamp:
                    times[request_id] = float(stamp)
    except FileNotFoundError:
        pass
    return times


if __name__ == "__main__":
    install(os.environ["FLUX_NB_BENCH_FINISH_LOG"])
    raise SystemExit(serve_main(sys.argv[1:]))
