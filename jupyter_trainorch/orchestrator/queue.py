"""Jobs that wait: the priority-ordered queue, jobs pending on dependencies, backoff timers.

In memory only; the store is the durable truth and ``recovery`` rebuilds this after a
restart. Runs on the orchestrator's event loop.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from typing import Any

from .. import policy
from ..spec import RetryPolicy
from ..store import PREEMPTED, JobRecord


def _workers_to_avoid(job: JobRecord) -> tuple[str, ...]:
    """Workers where an attempt failed in a way the job's rules retry elsewhere."""
    if not job.attempts or "on" not in (job.spec.get("retries") or {}):
        return ()
    rules = RetryPolicy.parse(job.spec.get("retries"))
    return tuple(
        sorted({
            attempt.worker for attempt in job.attempts
            if attempt.worker and attempt.cause and "other_worker" in rules.actions(attempt.cause)
        })
    )  # fmt: skip


def queued_job(job: JobRecord) -> policy.QueuedJob:
    resources = job.spec.get("resources", {})
    last = job.attempts[-1] if job.attempts else None
    return policy.QueuedJob(
        id=job.id,
        priority=job.priority,
        seq=job.seq,
        gpus=int(resources.get("gpus", 0)),
        cpus=float(resources.get("cpus", 1)),
        memory=int(resources.get("memory", 0)),
        nodes=int(resources.get("nodes", 1)),
        user=job.user,
        name=job.name,
        resumes=last is not None and last.state == PREEMPTED,
        groups=tuple(job.spec.get("quota_groups") or ()),
        avoid=_workers_to_avoid(job),
    )


class JobQueue:
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        # Sorted by policy.queue_key; the keys list makes insert and remove a bisect.
        self._items: list[policy.QueuedJob] = []
        self._keys: list[tuple[Any, ...]] = []
        self._by_id: dict[str, policy.QueuedJob] = {}
        # Queued jobs' time limits (seconds): what backfill may count on.
        self.time_limits: dict[str, float] = {}
        self._waiting: dict[str, set[str]] = {}  # job -> unfinished dependencies
        self._dependents: dict[str, set[str]] = {}  # dependency -> jobs waiting on it
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- the queue of jobs ready to run -------------------------------------------------
    @property
    def items(self) -> list[policy.QueuedJob]:
        """In dispatch order; the policy reads it, nobody else may change it."""
        return self._items

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def get(self, job_id: str) -> policy.QueuedJob:
        return self._by_id[job_id]

    def add(self, job: JobRecord) -> None:
        if job.id in self._by_id:
            return
        item = queued_job(job)
        self._by_id[item.id] = item
        timeout = job.spec.get("timeout")
        if isinstance(timeout, (int, float)) and timeout > 0:
            self.time_limits[item.id] = float(timeout)
        key = policy.queue_key(item)
        index = bisect.bisect_right(self._keys, key)
        self._keys.insert(index, key)
        self._items.insert(index, item)
        self._wake()

    def remove(self, job_id: str) -> None:
        item = self._by_id.pop(job_id, None)
        self.time_limits.pop(job_id, None)
        if item is None:
            return
        # Keys are unique (seq is), so bisect finds the one entry without a scan.
        index = bisect.bisect_left(self._keys, policy.queue_key(item))
        del self._keys[index]
        del self._items[index]

    # -- dependencies ---------------------------------------------------------------
    @property
    def waiting_on_dependencies(self) -> int:
        return len(self._waiting)

    def wait_for(self, job_id: str, dependencies: set[str]) -> None:
        self._waiting[job_id] = set(dependencies)
        for dep_id in dependencies:
            self._dependents.setdefault(dep_id, set()).add(job_id)

    def has_dependents(self, dep_id: str) -> bool:
        return bool(self._dependents.get(dep_id))

    def take_dependents(self, dep_id: str) -> list[str]:
        """The jobs that waited on ``dep_id`` (it has ended), oldest id order."""
        return sorted(self._dependents.pop(dep_id, set()))

    def dependency_met(self, job_id: str, dep_id: str) -> bool:
        """``dep_id`` succeeded; True when ``job_id`` waits on nothing else any more."""
        waiting = self._waiting.get(job_id)
        if waiting is None:
            return False
        waiting.discard(dep_id)
        if waiting:
            return False
        del self._waiting[job_id]
        return True

    # -- backoff ------------------------------------------------------------------------
    def later(self, job_id: str, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay`` seconds unless the job is forgotten first."""
        self.cancel_timer(job_id)

        def fire() -> None:
            self._timers.pop(job_id, None)
            callback()

        self._timers[job_id] = asyncio.get_running_loop().call_later(max(0.0, delay), fire)

    def cancel_timer(self, job_id: str) -> None:
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()

    def cancel_all_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- leaving --------------------------------------------------------------------
    def forget(self, job_id: str) -> None:
        """The job no longer waits for anything here (cancelled, failed, dispatched)."""
        self.remove(job_id)
        self.cancel_timer(job_id)
        for dep_id in self._waiting.pop(job_id, set()):
            self._dependents.get(dep_id, set()).discard(job_id)
