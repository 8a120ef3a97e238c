"""Rebuilding the orchestrator's in-memory queue from the store after a (re)start.

Nothing is lost: queued and backing-off jobs go back in the queue, jobs waiting on
dependencies wait again, and attempts a dead orchestrator left running are closed
as infrastructure failures (not counted against the job's retries) and requeued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    PENDING,
    PREEMPTED,
    QUEUED,
    RETRYING,
    SUCCEEDED,
)

if TYPE_CHECKING:
    from .service import Orchestrator


def recover(orch: Orchestrator) -> list[str]:
    """Requeue what the store says is unfinished; return the ids of orphaned attempts' jobs."""
    store, now = orch.store, orch.clock()
    unfinished = store.list_jobs(
        states=[PENDING, QUEUED, RETRYING, PREEMPTED, *ACTIVE_STATES], newest_first=False
    )
    orphans: list[str] = []
    for job in unfinished:
        if job.state in ACTIVE_STATES:
            orphans.append(job.id)
            last = job.attempts[-1] if job.attempts else None
            if last is not None and last.ended is None:
                store.update_attempt(
                    job.id,
                    last.n,
                    state=FAILED,
                    ended=now,
                    error="the orchestrator stopped while this attempt ran",
                    infrastructure=True,
                )
            store.update_job(job.id, state=QUEUED, error="requeued after an orchestrator restart")
            orch._enqueue(store.get_job(job.id))  # type: ignore[arg-type]
        elif job.state == PENDING:
            waiting = set()
            for dep_id in job.depends_on:
                dep = store.get_job(dep_id)
                if dep is None or dep.state in (FAILED, CANCELLED):
                    reason = "was lost" if dep is None else dep.state
                    orch._end_job(job.id, FAILED, error=f"dependency {dep_id} {reason}")
                    break
                if dep.state != SUCCEEDED:
                    waiting.add(dep_id)
            else:
                if waiting:
                    orch._wait_for(job.id, waiting)
                else:
                    store.update_job(job.id, state=QUEUED)
                    orch._enqueue(store.get_job(job.id))  # type: ignore[arg-type]
        else:
            if job.state != QUEUED:
                store.update_job(job.id, state=QUEUED, not_before=None)
            orch._enqueue(job)
    return orphans
