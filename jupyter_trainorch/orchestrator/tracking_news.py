"""What tracking reports about jobs (their runs, a warning, final metrics, a model version),
merged into each job's ``mlflow`` field and published on the change feed.

News arrives from the tracking process's reader thread, under a burst for hundreds of jobs
a second. Written one by one (read the job, write it back) it cost ~2 ms of the service's
CPU each, against the scheduling loop; so it is gathered for ``DELAY`` seconds and written
in one read and one transaction. Store and feed are thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

from ..store import JobStore
from .feed import ChangeFeed

DELAY = 0.05


class TrackingNews:
    def __init__(self, store: JobStore, feed: ChangeFeed) -> None:
        self.store = store
        self.feed = feed
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._timer: threading.Timer | None = None

    def add(self, job_id: str, info: dict[str, Any]) -> None:
        """Merge ``info`` into the job's ``mlflow`` field, within ``DELAY`` seconds."""
        if not any(info.values()):
            return
        with self._lock:
            self._pending.setdefault(job_id, {}).update(info)
            if self._timer is None:
                self._timer = threading.Timer(DELAY, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> None:
        """Write what has gathered now (also when the service stops)."""
        with self._lock:
            news, self._pending = self._pending, {}
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not news:
            return
        jobs = self.store.get_jobs(list(news))
        changes = [
            (job_id, {"mlflow": {**jobs[job_id][0].mlflow, **info}})
            for job_id, info in news.items()
            if job_id in jobs
        ]
        self.store.update_jobs(changes)
        for job_id, _ in changes:
            job = jobs[job_id][0]
            self.feed.publish(
                "job", job_id, user=job.user, state=job.state, mlflow=sorted(news[job_id])
            )
