"""Following one attempt from dispatch to its end, and ending jobs.

Events from the worker (started, output lines, progress) update the store and the
change feed; the attempt's outcome decides: succeeded, retrying after a backoff,
requeued after an infrastructure failure (lost worker), or failed. Ending a job
releases or fails the jobs that wait on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cluster import ClusterBackend
from ..runner.supervisor import cancel_attempt, read_log
from ..spec import RetryPolicy
from ..store import CANCELLED, FAILED, QUEUED, RETRYING, RUNNING, SUCCEEDED, JobRecord, JobStore
from ..tracking import TrackingHooks
from .config import OrchestratorConfig
from .feed import ChangeFeed

log = logging.getLogger(__name__)


@dataclass
class Running:
    job_id: str
    n: int
    worker: str
    gpu_ids: tuple[str, ...]
    cpus: float
    memory: int
    key: str
    future: Any = None
    started_running: bool = False
    cancel_requested: bool = False
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AttemptLifecycle:
    """The part of ``Orchestrator`` that follows attempts (a mixin: same state)."""

    # Provided by Orchestrator.
    store: JobStore
    backend: ClusterBackend
    feed: ChangeFeed
    config: OrchestratorConfig
    clock: Callable[[], float]
    _running: dict[str, Running]
    _waiting: dict[str, set[str]]
    _dependents: dict[str, set[str]]
    _timers: dict[str, asyncio.TimerHandle]
    _wake: asyncio.Event
    _stopping: bool
    _spawn: Callable[[Any], asyncio.Task[Any]]
    _get: Callable[[str], JobRecord]
    _enqueue: Callable[[JobRecord], None]
    _dequeue: Callable[[str], None]
    _model_registered: Callable[[str, dict[str, Any]], None]
    tracking: TrackingHooks | None

    def _on_worker_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        run = self._running.get(message.get("job_id", ""))
        if run is None or run.n != message.get("attempt"):
            return  # a stale attempt's late message
        if message.get("type") == "started":
            run.started_running = True
            run.extra["pid"] = message.get("pid")
            self.store.update_job_and_attempt(run.job_id, run.n, {"state": RUNNING}, {"state": RUNNING})
            self.feed.publish("job", run.job_id, state=RUNNING)
            return
        lines = message.get("lines") or []
        if lines:
            self.store.append_logs(run.job_id, run.n, [tuple(line) for line in lines])
            self.feed.publish("logs", run.job_id, attempt=run.n, lines=len(lines))
        progress = message.get("progress")
        if progress:
            step, total = progress.get("step"), progress.get("total")
            fraction = None
            if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total:
                fraction = max(0.0, min(1.0, step / total))
            record = {
                "step": step,
                "total": total,
                "fraction": fraction,
                "message": progress.get("message"),
                "metrics": progress.get("metrics") or {},
                "updated": self.clock(),
            }
            self.store.update_job(run.job_id, progress=record)
            self.feed.publish("progress", run.job_id, progress=record)
        points = message.get("metrics")
        if points and self.tracking is not None and run.mlflow_run_id:
            self.tracking.metrics(run.job_id, run.mlflow_run_id, points)

    async def _watch(self, run: Running) -> None:
        try:
            outcome = await run.future
        except asyncio.CancelledError:
            if self._stopping:
                raise
            outcome = {"error": "the attempt's task was cancelled", "infrastructure": not run.cancel_requested}
        except Exception as err:  # noqa: BLE001 - worker died (KilledWorker) or task failed
            outcome = {"error": f"{type(err).__name__}: {err}", "infrastructure": True}
        await self._finish_attempt(run, outcome)

    async def _stop_attempt(self, run: Running) -> None:
        """Cancel until the supervisor confirms, or the task never started."""
        for _ in range(60):
            if run.job_id not in self._running:
                return
            try:
                done = await self.backend.client.run(cancel_attempt, run.key, workers=[run.worker])
                if any(done.values()):
                    return
            except Exception:  # noqa: BLE001 - worker gone: the lost-worker path ends it
                pass
            if not run.started_running and run.future is not None:
                await run.future.cancel()
            await asyncio.sleep(0.5)

    async def _workers_changed(self, added: list[Any], removed: list[str]) -> None:
        for run in [r for r in self._running.values() if r.worker in removed]:
            if run.future is not None:
                await run.future.cancel()
            await self._finish_attempt(
                run, {"error": f"worker {run.worker} was lost", "infrastructure": True}
            )
        self._wake.set()

    async def _fill_log_gap(self, run: Running, outcome: dict[str, Any]) -> None:
        """Fetch lines whose events Dask dropped from the worker's durable log."""
        total = int(outcome.get("log_lines") or 0)
        stored = len(self.store.log_seqs(run.job_id, run.n)) if total else 0
        if total <= stored or run.worker not in self.backend.workers:
            return
        try:
            got = await self.backend.client.run(read_log, outcome["log_path"], 0, workers=[run.worker])
        except Exception as err:  # noqa: BLE001
            log.warning("could not fetch the log of %s: %s", run.key, err)
            return
        lines = got.get(run.worker) or []
        self.store.append_logs(run.job_id, run.n, [tuple(line) for line in lines])

    async def _finish_attempt(self, run: Running, outcome: dict[str, Any]) -> None:
        if self._running.get(run.job_id) is not run:
            return  # already finished through another path (lost worker and task error)
        del self._running[run.job_id]
        self._wake.set()
        await self._fill_log_gap(run, outcome)
        now = self.clock()
        exit_code = outcome.get("exit_code")
        error = outcome.get("error")
        succeeded = exit_code == 0 and not outcome.get("cancelled")
        infrastructure = bool(outcome.get("infrastructure"))
        attempt_state = SUCCEEDED if succeeded else (CANCELLED if run.cancel_requested else FAILED)
        self.store.update_attempt(
            run.job_id,
            run.n,
            state=attempt_state,
            ended=now,
            exit_code=exit_code,
            error=tail(error),
            infrastructure=infrastructure,
        )
        if self.tracking is not None and run.mlflow_run_id:
            store, job_id, n = self.store, run.job_id, run.n
            self.tracking.attempt_ended(
                job_id, run.mlflow_run_id, attempt_state,
                lambda: "\n".join(line.text for line in store.read_logs(job_id, attempt=n, limit=10**6)),
            )  # fmt: skip
        if succeeded:
            outputs = outcome.get("outputs")
            if outputs is not None:
                self.store.update_job(run.job_id, outputs=outputs, has_outputs=True)
            self._end_job(run.job_id, SUCCEEDED)
            return
        if run.cancel_requested or self._stopping:
            if not self._stopping:
                self._end_job(run.job_id, CANCELLED, error="cancelled")
            return
        job = self._get(run.job_id)
        if infrastructure and job.infrastructure_failures <= self.config.max_infrastructure_retries:
            self._schedule_retry(job, delay=0.5, error=error)
        elif not infrastructure and outcome.get("retryable", True) and job.user_failures <= job.max_retries:
            delay = RetryPolicy.parse(job.spec.get("retries")).delay(job.user_failures)
            self._schedule_retry(job, delay=delay, error=error)
        else:
            self._end_job(run.job_id, FAILED, error=tail(error))

    def _schedule_retry(self, job: JobRecord, delay: float, error: str | None) -> None:
        not_before = self.clock() + delay
        self.store.update_job(job.id, state=RETRYING, not_before=not_before, error=tail(error))
        self.feed.publish("job", job.id, state=RETRYING, delay=delay)

        def requeue() -> None:
            self._timers.pop(job.id, None)
            current = self.store.get_job(job.id)
            if current is None or current.state != RETRYING:
                return
            self.store.update_job(job.id, state=QUEUED)
            self._enqueue(current)
            self.feed.publish("job", job.id, state=QUEUED)

        self._timers[job.id] = asyncio.get_running_loop().call_later(delay, requeue)

    def _end_job(self, job_id: str, state: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"state": state, "ended": self.clock(), "not_before": None}
        if error is not None or state == SUCCEEDED:
            fields["error"] = error
        self.store.update_job(job_id, **fields)
        if self.tracking is not None:
            job = self.store.get_job(job_id)
            if job is not None:
                self.tracking.job_ended(
                    job_id, job.mlflow, state, job.spec.get("register_model", ""), self._model_registered
                )
        self.feed.publish("job", job_id, state=state)
        for dependent in sorted(self._dependents.pop(job_id, set())):
            waiting = self._waiting.get(dependent)
            if waiting is None:
                continue
            if state == SUCCEEDED:
                waiting.discard(job_id)
                if not waiting:
                    del self._waiting[dependent]
                    self.store.update_job(dependent, state=QUEUED)
                    self._enqueue(self._get(dependent))
                    self.feed.publish("job", dependent, state=QUEUED)
            else:
                self._dequeue(dependent)
                self._end_job(dependent, FAILED, error=f"dependency {job_id} {state}")


def tail(error: str | None, limit: int = 2000) -> str | None:
    if error is None or len(error) <= limit:
        return error
    return "…" + error[-limit:]
