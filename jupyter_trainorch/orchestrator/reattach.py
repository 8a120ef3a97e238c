"""After a restart: what became of the attempts an earlier orchestrator started, and
following them again (``adopt``) instead of running them twice.

The worker is asked first (its supervisor runs the attempt, or keeps the outcome of one
that ended); then the scheduler (an attempt Dask holds but has not started yet). What
neither knows is lost. ``audit`` repeats the question now and then for attempts whose
end no event reported.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..runner.protocol import AttemptReport, attempt_key
from ..runner.supervisor import attempt_reports
from ..store import AttemptRecord, JobRecord
from .attempts import AttemptTracker, Running
from .tracking_bridge import deliver_run_id

log = logging.getLogger(__name__)

# Scheduler task states of an attempt that Dask still holds and will run.
_HELD_BY_DASK = ("waiting", "queued", "processing", "no-worker")


def scheduler_task_states(keys: list[str], dask_scheduler: Any = None) -> dict[str, str]:
    """Run on the scheduler: the state of each key it holds."""
    tasks = dask_scheduler.tasks
    return {key: tasks[key].state for key in keys if key in tasks}


async def survey(
    tracker: AttemptTracker, attempts: list[AttemptRecord]
) -> dict[str, AttemptReport]:
    """What became of attempts the store says were running: ``{key: report}`` with state
    ``running``, ``finished`` (and its outcome) or ``pending`` (Dask will still run it).
    A key left out is lost: neither its worker nor the scheduler knows it."""
    by_worker: dict[str, list[str]] = {}
    for attempt in attempts:
        by_worker.setdefault(attempt.worker or "", []).append(
            attempt_key(attempt.job_id, attempt.n)
        )
    reports: dict[str, AttemptReport] = {}
    for worker, keys in by_worker.items():
        if worker not in tracker.backend.workers:
            continue
        try:
            got = await tracker.backend.client.run(attempt_reports, keys, workers=[worker])
        except Exception as err:  # noqa: BLE001 - the worker is going: its attempts are lost
            log.warning("could not ask %s about its attempts: %s", worker, err)
            continue
        reports.update(got.get(worker) or {})
    unknown = [key for keys in by_worker.values() for key in keys if key not in reports]
    if unknown:
        states = await tracker.backend.client.run_on_scheduler(scheduler_task_states, unknown)
        for key, state in states.items():
            if state in _HELD_BY_DASK:
                reports[key] = {"state": "pending"}
    return reports


async def adopt(
    tracker: AttemptTracker, job: JobRecord, attempt: AttemptRecord, report: AttemptReport
) -> None:
    """Follow an attempt started by an earlier orchestrator, as if it were ours."""
    from distributed import Future

    resources = job.spec.get("resources", {})
    run = Running(
        job_id=job.id,
        n=attempt.n,
        worker=attempt.worker or "",
        gpu_ids=tuple(attempt.gpu_ids),
        cpus=float(resources.get("cpus", 1)),
        memory=int(resources.get("memory", 0)),
        key=attempt_key(job.id, attempt.n),
        user=job.user,
        groups=tuple(job.spec.get("quota_groups") or ()),
        priority=job.priority,
        started=attempt.started or attempt.process_started or 0.0,
        timeout=job.spec.get("timeout"),
        mlflow_run_id=attempt.mlflow_run_id,
        started_running=attempt.process_started is not None,
        pid=attempt.pid,
    )
    tracker.running[job.id] = run
    tracker.tracking.attempt_adopted(job, run)
    if report["state"] == "finished":
        await tracker.finish(run, report["outcome"])
        return
    run.held_lines = []
    run.future = Future(run.key, tracker.backend.client)
    if report["state"] == "running":
        if report.get("process_started"):
            tracker.mark_running(run, report.get("pid"), report["process_started"])
        await tracker.read_missing_lines(run, report.get("log_path", ""))
    held, run.held_lines = run.held_lines, None
    if held:
        tracker.store_lines(run, held)
    if tracker.tracking.enabled:
        # It may still wait for its run id if the earlier orchestrator died first.
        tracker.spawn(deliver_run_id(tracker, run, run.mlflow_run_id or ""))
    tracker.spawn(tracker.watch(run))


async def audit(tracker: AttemptTracker) -> None:
    """Catch what no event reported: an adopted attempt that ended between the survey
    and its future, or one that Dask dropped. Runs every ``audit_interval`` seconds."""
    overdue = [
        r
        for r in tracker.running.values()
        # A gang is never adopted: its own watch follows every rank.
        if time.monotonic() - r.since > tracker.config.audit_interval and not r.ranks
    ]
    if not overdue:
        return
    reports = await survey(
        tracker, [AttemptRecord(r.job_id, r.n, worker=r.worker) for r in overdue]
    )
    for run in overdue:
        report = reports.get(run.key)
        if run.job_id not in tracker.running or (run.future is not None and run.future.done()):
            continue
        if report is None:
            await tracker.finish(
                run, {"error": "the attempt was lost by Dask", "infrastructure": True}
            )
        elif report["state"] == "finished":
            await tracker.finish(run, report["outcome"])
