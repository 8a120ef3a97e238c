"""The orchestrator: owns the queue, places jobs, decides what an attempt's end means.

Runs on one asyncio loop (see ``host.OrchestratorHost``) together with the
asynchronous Dask client. It is composed of a ``JobQueue`` (what waits), a ``Scheduler``
(what starts where, what is preempted), an ``AttemptTracker`` (what runs on workers), the
``JobOutcomes`` (what an attempt's end means) and a ``TrackingBridge`` (MLflow). The flow of
one job through these:

  submit ─► store (queued, or pending on dependencies) ─► queue
  ─► scheduler.schedule (policy.decide) ─► scheduler.dispatch ─► attempts.launch (pinned
  Dask task) ─► worker events ─► attempts.finish ─► outcomes.attempt_ended (succeeded │
  preempted: queued again │ retry with backoff │ failed) ─► dependents settled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..cluster import ClusterBackend
from ..package import code_hash
from ..runner.protocol import EVENT_TOPIC
from ..spec import JobSpec
from ..store import (
    CANCELLED,
    FAILED,
    PENDING,
    QUEUED,
    RETRYING,
    TERMINAL_STATES,
    DuplicateSubmission,
    JobRecord,
    JobStore,
)
from ..store.models import failure_cause
from . import dependencies
from .attempts import AttemptEnd
from .autoscale import Autoscaler
from .cluster_view import ClusterView
from .config import OrchestratorConfig
from .errors import JobNotFound, JobStateError, OrchestratorBusy
from .feed import ChangeFeed
from .groups import check_replay, submit_group
from .intake import check_runnable
from .notices import Notices
from .outcomes import JobOutcomes
from .queue import JobQueue
from .quotas import Quotas
from .reattach import audit
from .recovery import Recovery, recover
from .scheduler import Scheduler
from .shares import FairShare
from .tracking_bridge import TrackingBridge
from .upstream import UpstreamAttempts
from .worker_health import WorkerHealth

log = logging.getLogger(__name__)

USAGE_INTERVAL = 5.0  # seconds between readings of the workers' CPU, memory and GPUs


class Orchestrator:
    def __init__(
        self,
        store: JobStore,
        backend: ClusterBackend,
        config: OrchestratorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.backend = backend
        self.config = config
        self.clock = clock
        self.feed = ChangeFeed()
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.url: str | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.draining = False  # no new dispatches; running attempts finish
        self.recovery: Recovery | None = None
        self.queue = JobQueue(wake=self._wake.set)
        self.shares = FairShare(store, config.fair_share_half_life)
        self.quotas = Quotas.from_config(config)
        self.tracking = TrackingBridge(store, self.feed, config)
        self.notices = Notices(store, self.feed, config, clock)
        self.outcomes = JobOutcomes(
            store,
            self.queue,
            self.feed,
            self.tracking,
            config,
            clock,
            stopping=lambda: self._stopping,
            drop_checkpoints=lambda job: self.attempts.drop_checkpoints(job),
            notify_admins=self.notices.job_failed_for_admins,
        )
        self.worker_health = WorkerHealth(
            config.worker_failure_limit, config.worker_cooldown, config.worker_cooldown,
            clock, self._worker_excluded,
        )  # fmt: skip
        self.attempts = UpstreamAttempts(
            store, backend, self.feed, config, self.tracking,
            spawn=self._spawn, on_end=self._attempt_ended, wake=self._wake.set, clock=clock,
        )  # fmt: skip
        pool = config.scaling_pool()
        self.autoscaler = (
            Autoscaler(pool, backend, self.feed, clock, self._spawn, self._wake.set)
            if pool is not None else None
        )  # fmt: skip
        self.scheduler = Scheduler(
            store, backend, self.queue, self.attempts, self.outcomes, self.shares, self.quotas,
            config.preemption_rules(), clock, spawn=self._spawn, wake=self._wake.set,
            draining=lambda: self.draining, autoscaler=self.autoscaler,
            excluded=self.worker_health.excluded,
        )  # fmt: skip
        self.cluster_view = ClusterView(
            backend, self.scheduler, self.attempts, self.queue, self.autoscaler, clock,
            excluded=self.worker_health.excluded,
        )  # fmt: skip
        self._loop_task: asyncio.Task[None] | None = None
        if self.notices.want_lines:
            self.attempts.line_sink = self.notices.lines_stored

    def _attempt_ended(self, end: AttemptEnd) -> None:
        run = end.run
        if not (run.cancel_requested or run.preempted_for or self._stopping):
            cause = None if end.succeeded else failure_cause(end.infrastructure, end.error)
            self.worker_health.attempt_ended(run.worker, run.job_id, cause,
                                             len(self.backend.workers))  # fmt: skip
        self.outcomes.attempt_ended(end)

    def _worker_excluded(self, worker: str, text: str) -> None:
        self.notices.worker_excluded(worker, text)
        asyncio.get_running_loop().call_later(self.config.worker_cooldown + 0.05, self._wake.set)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, url: str | None = None) -> None:
        self.url = url
        holder = self.store.acquire_lease(self.owner, url, self.clock(), self.config.lease_ttl)
        if holder is not None:
            where = f" and serves its API at {holder.url}" if holder.url else ""
            raise OrchestratorBusy(
                f"the job store {self.store.url} is owned by another orchestrator "
                f"(pid {holder.pid} on {holder.host}){where}; only one may dispatch jobs from it"
            )
        self.tracking.start()
        await self.backend.start(self.attempts.workers_changed)
        self.backend.client.subscribe_topic(EVENT_TOPIC, self.attempts.on_worker_event)
        self.recovery = await recover(self)
        if any(self.recovery.to_dict().values()):
            log.info("recovered: %s", self.recovery.to_dict())
        self._loop_task = asyncio.ensure_future(self._scheduling_loop())
        self._spawn(self._keep_lease())
        self._spawn(self._housekeeping())
        self._wake.set()

    async def stop(self) -> None:
        """Stop everything: running attempts are stopped and their jobs requeued for the
        next start; a local cluster this orchestrator started is closed."""
        self._stopping = True
        self._wake.set()
        self.queue.cancel_all_timers()
        await self.attempts.stop_all(timeout=self.config.grace_period + 10)
        await self._close(close_cluster=True)

    async def detach(self) -> None:
        """Leave: attempts keep running on their workers (and the cluster keeps running);
        the next orchestrator on this store adopts them."""
        self._stopping = True
        self._wake.set()
        self.queue.cancel_all_timers()
        await self._close(close_cluster=False)

    async def _close(self, close_cluster: bool) -> None:
        self.attempts.stopping = True
        self.scheduler.close()
        try:
            await asyncio.wait_for(self.attempts.forget_collected(), timeout=5)
        except Exception:  # noqa: BLE001 - files stay until the worker goes
            pass
        for task in list(self._tasks) + ([self._loop_task] if self._loop_task else []):
            task.cancel()
        await self.backend.close(stop_cluster=close_cluster)
        await asyncio.get_running_loop().run_in_executor(None, self.tracking.close)
        self.notices.close()
        self.store.release_lease(self.owner)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _keep_lease(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.lease_ttl / 3)
            holder = self.store.acquire_lease(
                self.owner, self.url, self.clock(), self.config.lease_ttl
            )
            if holder is not None:
                log.error(
                    "lost the store lease to pid %s on %s; stopping dispatch",
                    holder.pid,
                    holder.host,
                )
                self._stopping = True

    async def _housekeeping(self) -> None:
        """Tell workers which outcomes are stored and which checkpoints may go; read what
        workers use; audit attempts no event accounted for."""
        last_audit = last_usage = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(1.0)
            try:
                await self.attempts.forget_collected()
                if time.monotonic() - last_usage >= USAGE_INTERVAL:
                    last_usage = time.monotonic()
                    self.cluster_view.sample_idle()
                    await self.cluster_view.refresh_usage()
                if time.monotonic() - last_audit >= self.config.audit_interval:
                    last_audit = time.monotonic()
                    await audit(self.attempts)
                    self.notices.check_waits()
            except Exception:  # noqa: BLE001 - next round tries again
                log.exception("housekeeping round failed")

    # -- commands ------------------------------------------------------------------
    async def submit(
        self, spec: JobSpec, package: bytes | None = None, rerun_of: str | None = None,
        admin: bool = False,
    ) -> JobRecord:  # fmt: skip
        """Queue a job; ``admin``: it may wait on other users' jobs."""
        return self._create(spec, package, rerun_of, admin=admin)

    async def submit_once(
        self, spec: JobSpec, package: bytes | None, idempotency_key: str, request_hash: str,
        admin: bool = False,
    ) -> tuple[JobRecord, bool]:  # fmt: skip
        """Queue a job unless this user's ``idempotency_key`` made one already (a client
        retrying after a lost answer): then that job, never a second one. The flag says
        whether the job was made now."""
        earlier = self.store.find_by_idempotency_key(spec.user, idempotency_key)
        if earlier is None:
            try:
                record = self._create(spec, package, None, idempotency_key, request_hash, admin)
                return record, True
            except DuplicateSubmission as err:  # the same key, at the same moment
                earlier = self.get(err.job_id)
        check_replay(earlier, request_hash)
        return earlier, False

    async def submit_group(
        self, jobs: list[tuple[JobSpec, bytes | None]], admin: bool = False,
        idempotency_key: str | None = None, request_hash: str | None = None,
    ) -> tuple[list[JobRecord], bool]:  # fmt: skip
        """Queue jobs that may wait on each other by name: all of them, or none."""
        return submit_group(self, jobs, admin, idempotency_key, request_hash)

    def _create(
        self,
        spec: JobSpec,
        package: bytes | None,
        rerun_of: str | None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        admin: bool = False,
    ) -> JobRecord:
        record, unfinished = self.new_record(spec, package, rerun_of, idempotency_key,
                                             request_hash, admin)  # fmt: skip
        self.store.create_job(record, package)
        self.enqueue(record, unfinished)
        return record

    def new_record(
        self, spec: JobSpec, package: bytes | None, rerun_of: str | None = None,
        idempotency_key: str | None = None, request_hash: str | None = None,
        admin: bool = False, group: dict[str, str] | None = None,
    ) -> tuple[JobRecord, set[str]]:  # fmt: skip
        """A checked, not yet stored job and the dependencies it must wait on (``group``:
        names of jobs submitted with it -> their ids)."""
        check_runnable(self, spec)
        unfinished = dependencies.resolve(self.store, spec, admin, group)
        record = JobRecord(
            id=uuid.uuid4().hex[:10],
            seq=0,
            name=spec.name,
            user=spec.user,
            state=PENDING if unfinished else QUEUED,
            priority=spec.priority,
            spec=spec.to_dict(),
            depends_on=list(spec.depends_on),
            created=self.clock(),
            code_hash=code_hash(spec.kind, spec.source, spec.command, package),
            rerun_of=rerun_of,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        return record, unfinished

    def enqueue(self, record: JobRecord, unfinished: set[str]) -> None:
        """A stored new job: into the queue, or waiting on ``unfinished``."""
        self.tracking.submitted(record)
        if unfinished:
            self.queue.wait_for(record.id, unfinished)
        else:
            self.queue.add(record)
        self._publish(record, record.state)

    async def cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.state in TERMINAL_STATES:
            raise JobStateError(f"job {job_id} has already {job.state}; there is nothing to cancel")
        running = self.attempts.running.get(job_id)
        if running is not None:
            running.cancel_requested = True
            self._spawn(self.attempts.stop(running))
            return job
        self.queue.forget(job_id)
        self.outcomes.end_job(job_id, CANCELLED, error="cancelled before it started")
        return self.get(job_id)

    async def retry(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.state not in (FAILED, CANCELLED):
            raise JobStateError(
                f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried"
            )
        problem = dependencies.check_retry(self.store, job)
        if problem:
            raise JobStateError(problem)
        self.store.update_job(
            job_id,
            state=QUEUED,
            ended=None,
            error=None,
            not_before=None,
            retry_from=len(job.attempts) + 1,
        )
        job = self.get(job_id)
        self.queue.add(job)
        self._publish(job, QUEUED)
        return job

    async def rerun(self, job_id: str, user: str | None = None) -> JobRecord:
        """A new job from the stored spec and code package, byte for byte (no dependencies),
        owned by ``user`` (who asked for it) when given."""
        found = self.store.get_jobs([job_id], with_packages=True)
        if job_id not in found:
            raise JobNotFound(job_id)
        job, package = found[job_id]
        spec = JobSpec.from_dict({**job.spec, "depends_on": [], "dependencies": []})
        if user:
            spec.user = user
        return await self.submit(spec, package, rerun_of=job_id)

    async def set_priority(self, job_id: str, priority: int) -> JobRecord:
        """Change the priority of a job that has not started yet (it moves in the queue)."""
        job = self.get(job_id)
        if job.state not in (QUEUED, PENDING, RETRYING):
            raise JobStateError(
                f"job {job_id} is {job.state}; only a job that has not started can change priority"
            )
        self.store.update_job(job_id, priority=priority)
        if job_id in self.queue:
            self.queue.remove(job_id)
            self.queue.add(self.get(job_id))
        self._publish(job, job.state, priority=priority)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _publish(self, job: JobRecord, state: str, **data: Any) -> None:
        self.outcomes.publish(job, state, **data)

    # -- placing jobs (scheduler.Scheduler) ------------------------------------------
    def waiting(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.scheduler.waiting(job_ids)

    def gpus_held(self) -> tuple[dict[str, int], dict[str, int]]:
        """GPUs held now, by user and by quota group."""
        return self.scheduler.gpus_held()

    def queue_depths(self) -> dict[int, int]:
        """Jobs waiting for resources, by priority."""
        depths: dict[int, int] = {}
        for job in self.queue.items:
            depths[job.priority] = depths.get(job.priority, 0) + 1
        return depths

    async def _scheduling_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                self.scheduler.schedule()
                self.cluster_view.sample_idle()
            except Exception:  # noqa: BLE001 - one bad round must not stop scheduling
                log.exception("scheduling round failed")
            await asyncio.sleep(0)

    # -- views for the API ------------------------------------------------------------
    def cluster_status(self) -> dict[str, Any]:
        recovery = self.recovery.to_dict() if self.recovery else None
        return self.cluster_view.status(self.draining, recovery)
