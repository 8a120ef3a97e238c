"""Picking up where an earlier orchestrator left off: reattach, never rerun.

Jobs the store says are running are looked up on their workers: an attempt that still
runs is adopted (its log continues where the store's ends), one that ended meanwhile is
collected from the outcome its worker kept. Only an attempt that nobody knows any more
(its worker is gone, or Dask never started it) is a lost attempt, retried as an
infrastructure failure. A multi-node attempt (``gangs``) is the exception: it is not
adopted but stopped on every worker and run again, counted as an infrastructure
re-execution (unless its outcome was already kept). Waiting jobs go back into the queue or
wait on their dependencies again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..runner.protocol import attempt_key
from ..store import (
    ACTIVE_STATES,
    FAILED,
    PENDING,
    PREEMPTED,
    QUEUED,
    RETRYING,
    SUCCEEDED,
    AttemptRecord,
    JobRecord,
)
from .attempts import AttemptEnd, Running
from .dependencies import wait_again
from .reattach import adopt, survey

if TYPE_CHECKING:
    from .service import Orchestrator

LOST_WHILE_AWAY = "the attempt was lost while the orchestrator was away"
GANG_RESTARTED = "a multi-node attempt is stopped and run again when the orchestrator restarts"


@dataclass
class Recovery:
    adopted: int = 0  # still running: followed again
    collected: int = 0  # ended while the orchestrator was away: outcome recorded
    lost: int = 0  # nobody knew them any more: retried (or failed) as infrastructure
    requeued: int = 0  # waiting jobs put back in the queue

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


async def recover(orch: Orchestrator) -> Recovery:
    store, summary = orch.store, Recovery()
    unfinished = store.list_jobs(
        states=[PENDING, QUEUED, RETRYING, PREEMPTED, *ACTIVE_STATES], order="oldest"
    )
    active = [job for job in unfinished if job.state in ACTIVE_STATES and job.attempts]
    reports = await survey(orch.attempts, [job.attempts[-1] for job in active]) if active else {}
    for job in unfinished:
        if job.state in ACTIVE_STATES:
            last = job.attempts[-1] if job.attempts else None
            report = reports.get(attempt_key(job.id, last.n)) if last else None
            nodes = int(job.spec.get("resources", {}).get("nodes", 1))
            if last is not None and last.ended is None and nodes > 1:
                if report is None or report["state"] != "finished":
                    await _stop_gang(orch, job.id, last.n, nodes)
                    _settle_unknown_attempt(orch, job, last, GANG_RESTARTED)
                    summary.lost += 1
                    continue
            if last is not None and report is not None:
                await adopt(orch.attempts, job, last, report)
                if report["state"] == "finished":
                    summary.collected += 1
                else:
                    summary.adopted += 1
            else:
                _settle_unknown_attempt(orch, job, last)
                summary.lost += last is not None and last.ended is None
        elif job.state == PENDING:
            wait_again(orch, job)
        else:
            orch.outcomes.requeue(job)
            summary.requeued += 1
    return summary


async def _stop_gang(orch: Orchestrator, job_id: str, n: int, nodes: int) -> None:
    """Stop every rank of a multi-node attempt: running children, and tasks not started."""
    from distributed import Future

    from ..runner.supervisor import cancel_jobs

    client = orch.backend.client
    try:
        await client.run(cancel_jobs, [job_id])
        for rank in range(nodes):
            await Future(attempt_key(job_id, n, rank), client).cancel()
    except Exception:  # noqa: BLE001 - workers gone: nothing of it runs there any more
        pass


def _settle_unknown_attempt(
    orch: Orchestrator, job: JobRecord, last: AttemptRecord | None, lost: str = LOST_WHILE_AWAY
) -> None:
    """Nobody knows the attempt any more: use what the store recorded of its end, if
    anything, else it was lost."""
    run = Running(job.id, last.n if last else 0, last.worker or "" if last else "", (), 0.0, 0, "",
                  user=job.user)  # fmt: skip
    if last is not None and last.ended is not None:
        # The attempt's end was stored, the job's decision was not: decide now.
        end = AttemptEnd(run, last.state == SUCCEEDED, last.infrastructure, True, last.error)
    else:
        if last is not None:
            orch.store.update_attempt(
                job.id, last.n, state=FAILED, ended=orch.clock(), error=lost,
                infrastructure=True,
            )  # fmt: skip
        end = AttemptEnd(run, False, True, True, lost)
    orch.outcomes.attempt_ended(end)
