"""Counters behind ``GET /stats``: jobs by outcome, duplicate submissions, requests, injected faults.

Tests and benchmarks read them to prove, e.g., that retries under faults never made a second job.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServerStats"]


@dataclass
class ServerStats:
    """Mutable counters, touched only from the server's event loop."""

    jobs_submitted: int = 0
    jobs_completed: int = 0
    jobs_cancelled: int = 0
    jobs_failed: int = 0
    duplicate_submissions: int = 0
    requests: Counter = field(default_factory=Counter)  # endpoint kind -> HTTP requests received
    faults: Counter = field(default_factory=Counter)  # fault kind -> injected count
    _seen_keys: set = field(default_factory=set, repr=False)

    def record_submission(self, key: str) -> bool:
        """Count a new job; True when an identical normalised request was submitted before."""
        self.jobs_submitted += 1
        duplicate = key in self._seen_keys
        if duplicate:
            self.duplicate_submissions += 1
        self._seen_keys.add(key)
        return duplicate

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        kinds = ("submit", "run", "status", "stream", "result", "cancel", "file", "upload", "token", "health", "stats", "other")
        return {
            "jobs": {
                "submitted": self.jobs_submitted,
                "completed": self.jobs_completed,
                "cancelled": self.jobs_cancelled,
                "failed": self.jobs_failed,
            },
            "duplicate_submissions": self.duplicate_submissions,
            "requests": {kind: self.requests.get(kind, 0) for kind in kinds},
            "faults": {"total": sum(self.faults.values()), **dict(self.faults)},
            **extra,
        }
