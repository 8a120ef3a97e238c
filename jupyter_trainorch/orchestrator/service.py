"""The orchestrator: owns the queue, places jobs, follows attempts, retries, recovers.

Runs on one asyncio loop (see ``host.OrchestratorHost``) together with the
asynchronous Dask client. The flow of one job through this module:

  submit ─► store (queued, or pending on dependencies) ─► _schedule (policy.plan)
  ─► _dispatch (Client.submit of runner.run_attempt, pinned to the chosen worker)
  ─► _on_worker_event (started, output lines, progress) ─► _watch ─► _finish_attempt
  (succeeded │ retry with backoff │ failed) ─► dependents released, change published.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import policy
from ..cluster import ClusterBackend
from ..package import read_package
from ..runner.supervisor import (
    EVENT_TOPIC,
    attempt_key,
    cancel_jobs,
    run_attempt,
)
from ..spec import JobSpec, SpecError
from ..store import (
    CANCELLED,
    FAILED,
    PENDING,
    QUEUED,
    RETRYING,
    STARTING,
    SUCCEEDED,
    TERMINAL_STATES,
    AttemptRecord,
    JobRecord,
    JobStore,
)
from ..tracking import TrackingHooks
from .attempts import AttemptLifecycle, Running
from .config import OrchestratorConfig
from .errors import JobNotFound, JobStateError, OrchestratorBusy
from .feed import ChangeFeed
from .recovery import recover
from .tracking_bridge import TrackingBridge

log = logging.getLogger(__name__)


def code_hash(spec: JobSpec, package: bytes | None) -> str:
    """What the job runs: its code, its command, its captured variables and input files
    (not the package's metadata or zip timestamps)."""
    digest = hashlib.sha256()
    for part in (spec.kind, spec.source, spec.command):
        digest.update(part.encode() + b"\0")
    variables, files = read_package(package) if package else ({}, {})
    for prefix, items in (("v", variables), ("f", files)):
        for name, data in sorted(items.items()):
            digest.update(f"{prefix}:{name}:{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


class Orchestrator(AttemptLifecycle, TrackingBridge):
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
        self._queue: list[policy.QueuedJob] = []
        self._queue_keys: list[tuple[Any, ...]] = []
        self._queued: dict[str, policy.QueuedJob] = {}
        self._running: dict[str, Running] = {}
        self._waiting: dict[str, set[str]] = {}  # job -> unfinished dependencies
        self._dependents: dict[str, set[str]] = {}  # dependency -> waiting jobs
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.tracking: TrackingHooks | None = None
        self.mlflow_uri: str | None = None
        self._loop_task: asyncio.Task[None] | None = None

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
        self.tracking = self._make_tracking()
        await self.backend.start(self._workers_changed)
        self.backend.client.subscribe_topic(EVENT_TOPIC, self._on_worker_event)
        orphans = recover(self)
        if orphans and self.backend.workers:
            try:
                await self.backend.client.run(cancel_jobs, orphans)
            except Exception as err:  # noqa: BLE001 - best effort: workers may be gone
                log.warning("could not stop attempts left by the previous orchestrator: %s", err)
        self._loop_task = asyncio.ensure_future(self._scheduling_loop())
        self._spawn(self._keep_lease())
        self._wake.set()

    async def stop(self) -> None:
        """Stop dispatching; running attempts are stopped and requeued on next start."""
        self._stopping = True
        self._wake.set()
        for handle in self._timers.values():
            handle.cancel()
        if self._running and self.backend.client is not None:
            try:
                await asyncio.wait_for(
                    self.backend.client.run(cancel_jobs, list(self._running)), timeout=10
                )
            except Exception:  # noqa: BLE001 - cluster already gone
                pass
        for task in list(self._tasks) + ([self._loop_task] if self._loop_task else []):
            task.cancel()
        await self.backend.close()
        if self.tracking is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tracking.close)
        self.store.release_lease(self.owner)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _keep_lease(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.lease_ttl / 3)
            holder = self.store.acquire_lease(self.owner, self.url, self.clock(), self.config.lease_ttl)
            if holder is not None:
                log.error("lost the store lease to pid %s on %s; stopping dispatch", holder.pid, holder.host)
                self._stopping = True

    # -- commands ------------------------------------------------------------------
    async def submit(self, spec: JobSpec, package: bytes | None = None, rerun_of: str | None = None) -> JobRecord:
        if self.backend.workers:
            problem = policy.fit_error(
                spec.resources.gpus, spec.resources.cpus, spec.resources.memory, self._views()
            )
            if problem:
                raise SpecError(problem)
        depends_on = self._resolve_dependencies(spec.depends_on)
        spec.depends_on = depends_on
        unfinished = set()
        for dep_id in depends_on:
            dep = self.store.get_job(dep_id)
            assert dep is not None
            if dep.state in (FAILED, CANCELLED):
                raise SpecError(f"--after: job {dep_id} ({dep.name}) has already {dep.state}")
            if dep.state != SUCCEEDED:
                unfinished.add(dep_id)
        record = JobRecord(
            id=uuid.uuid4().hex[:10],
            seq=0,
            name=spec.name,
            user=spec.user,
            state=PENDING if unfinished else QUEUED,
            priority=spec.priority,
            spec=spec.to_dict(),
            depends_on=depends_on,
            created=self.clock(),
            code_hash=code_hash(spec, package),
            rerun_of=rerun_of,
        )
        self.store.create_job(record, package)
        self._track_submission(record, package)
        if unfinished:
            self._wait_for(record.id, unfinished)
        else:
            self._enqueue(record)
        self.feed.publish("job", record.id, state=record.state)
        return record

    def _resolve_dependencies(self, refs: list[str]) -> list[str]:
        """``--after`` takes job ids, or names of earlier jobs (the newest of that name)."""
        resolved: list[str] = []
        for ref in refs:
            job = self.store.get_job(ref)
            if job is None:
                named = [j for j in self.store.list_jobs(limit=500) if j.name == ref]
                if not named:
                    raise SpecError(f"--after: there is no job with id or name {ref!r}")
                job = named[0]
            if job.id not in resolved:
                resolved.append(job.id)
        return resolved

    async def cancel(self, job_id: str) -> JobRecord:
        job = self._get(job_id)
        if job.state in TERMINAL_STATES:
            raise JobStateError(f"job {job_id} has already {job.state}; there is nothing to cancel")
        running = self._running.get(job_id)
        if running is not None:
            running.cancel_requested = True
            self._spawn(self._stop_attempt(running))
            return job
        self._dequeue(job_id)
        self._end_job(job_id, CANCELLED, error="cancelled before it started")
        return self._get(job_id)

    async def retry(self, job_id: str) -> JobRecord:
        job = self._get(job_id)
        if job.state not in (FAILED, CANCELLED):
            raise JobStateError(f"job {job_id} is {job.state}; only failed or cancelled jobs can be retried")
        for dep_id in job.depends_on:
            dep = self.store.get_job(dep_id)
            if dep is not None and dep.state != SUCCEEDED:
                raise JobStateError(f"job {job_id} depends on {dep_id}, which has {dep.state}")
        self.store.update_job(
            job_id, state=QUEUED, ended=None, error=None, not_before=None, retry_from=len(job.attempts) + 1
        )
        job = self._get(job_id)
        self._enqueue(job)
        self.feed.publish("job", job_id, state=QUEUED)
        return job

    async def rerun(self, job_id: str) -> JobRecord:
        """A new job from the stored spec and code package, byte for byte (no dependencies)."""
        found = self.store.get_jobs([job_id], with_packages=True)
        if job_id not in found:
            raise JobNotFound(job_id)
        job, package = found[job_id]
        spec = JobSpec.from_dict({**job.spec, "depends_on": []})
        return await self.submit(spec, package, rerun_of=job_id)

    async def set_priority(self, job_id: str, priority: int) -> JobRecord:
        """Change the priority of a job that has not started yet (it moves in the queue)."""
        job = self._get(job_id)
        if job.state not in (QUEUED, PENDING, RETRYING):
            raise JobStateError(
                f"job {job_id} is {job.state}; only a job that has not started can change priority"
            )
        self.store.update_job(job_id, priority=priority)
        if job_id in self._queued:
            self._remove_from_queue(job_id)
            self._enqueue(self._get(job_id))
        self.feed.publish("job", job_id, state=job.state, priority=priority)
        return self._get(job_id)

    def _get(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    # -- the queue -----------------------------------------------------------------
    def _enqueue(self, job: JobRecord) -> None:
        resources = job.spec.get("resources", {})
        item = policy.QueuedJob(
            id=job.id,
            priority=job.priority,
            seq=job.seq,
            gpus=int(resources.get("gpus", 0)),
            cpus=float(resources.get("cpus", 1)),
            memory=int(resources.get("memory", 0)),
            user=job.user,
        )
        if item.id in self._queued:
            return
        self._queued[item.id] = item
        key = policy.queue_key(item)
        index = bisect.bisect_right(self._queue_keys, key)
        self._queue_keys.insert(index, key)
        self._queue.insert(index, item)
        self._wake.set()

    def _remove_from_queue(self, job_id: str) -> None:
        item = self._queued.pop(job_id, None)
        if item is None:
            return
        # Keys are unique (seq is), so bisect finds the one entry without a scan.
        index = bisect.bisect_left(self._queue_keys, policy.queue_key(item))
        del self._queue_keys[index]
        del self._queue[index]

    def _dequeue(self, job_id: str) -> None:
        self._remove_from_queue(job_id)
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        for dep_id in self._waiting.pop(job_id, set()):
            self._dependents.get(dep_id, set()).discard(job_id)

    def _wait_for(self, job_id: str, dependencies: set[str]) -> None:
        self._waiting[job_id] = set(dependencies)
        for dep_id in dependencies:
            self._dependents.setdefault(dep_id, set()).add(job_id)

    def _views(self) -> list[policy.WorkerView]:
        held_gpus: dict[str, set[str]] = {}
        held_cpus: dict[str, float] = {}
        held_memory: dict[str, int] = {}
        for run in self._running.values():
            held_gpus.setdefault(run.worker, set()).update(run.gpu_ids)
            held_cpus[run.worker] = held_cpus.get(run.worker, 0.0) + run.cpus
            held_memory[run.worker] = held_memory.get(run.worker, 0) + run.memory
        views = []
        for addr, worker in sorted(self.backend.workers.items()):
            taken = held_gpus.get(addr, set())
            views.append(
                policy.WorkerView(
                    address=addr,
                    gpu_ids=worker.gpu_ids,
                    free_gpu_ids=tuple(g for g in worker.gpu_ids if g not in taken),
                    cpus=worker.cpus,
                    free_cpus=worker.cpus - held_cpus.get(addr, 0.0),
                    memory=worker.memory,
                    free_memory=max(0, worker.memory - held_memory.get(addr, 0)),
                )
            )
        return views

    async def _scheduling_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._schedule()
            except Exception:  # noqa: BLE001 - one bad round must not stop scheduling
                log.exception("scheduling round failed")
            await asyncio.sleep(0)

    def _schedule(self) -> None:
        if not self._queue or not self.backend.workers:
            return
        placements = policy.plan(self._queue, self._views())
        if not placements:
            return
        chosen = [(p, self._queued[p.job_id]) for p in placements]
        for _, item in chosen:
            self._remove_from_queue(item.id)
        self._dispatch(chosen)

    def _dispatch(self, placements: list[tuple[policy.Placement, policy.QueuedJob]]) -> None:
        now = self.clock()
        jobs = self.store.get_jobs([item.id for _, item in placements], with_packages=True)
        attempts, changes = [], []
        for placement, item in placements:
            job, package = jobs[item.id]
            n = len(job.attempts) + 1
            run = Running(
                job_id=job.id,
                n=n,
                worker=placement.worker,
                gpu_ids=placement.gpu_ids,
                cpus=item.cpus,
                memory=item.memory,
                key=attempt_key(job.id, n),
            )
            self._running[job.id] = run
            attempts.append(
                AttemptRecord(job.id, n, STARTING, placement.worker, list(placement.gpu_ids), started=now)
            )
            fields: dict[str, Any] = {"state": STARTING, "not_before": None}
            if job.started is None:
                fields["started"] = now
            changes.append((job.id, fields))
            self._spawn(self._launch(job, run, package))
        self.store.add_attempts(attempts)
        self.store.update_jobs(changes)
        for _, item in placements:
            self.feed.publish("job", item.id, state=STARTING)

    async def _launch(self, job: JobRecord, run: Running, package: bytes | None) -> None:
        """Hand the attempt to Dask; its MLflow run opens meanwhile, not before."""
        run.future = self._submit_attempt(job, run, package, self._tracking_env())
        self._open_attempt_run_soon(job, run)
        await self._watch(run)

    def _submit_attempt(self, job: JobRecord, run: Running, package: bytes | None, env: dict[str, str]) -> Any:
        spec = job.spec
        request = {
            "job_id": job.id,
            "attempt": run.n,
            "name": job.name,
            "kind": spec.get("kind", "python"),
            "source": spec.get("source", ""),
            "command": spec.get("command", ""),
            "params": spec.get("params", {}),
            "env": {**spec.get("env", {}), **env},
            "outputs": spec.get("outputs", []),
            "workdir": spec.get("workdir"),
            "timeout": spec.get("timeout"),
            "gpu_ids": list(run.gpu_ids),
            "grace": self.config.grace_period,
            # Samples are only worth taking when they have somewhere to go.
            "system_metrics_interval": self.config.system_metrics_interval if self.tracking else 0,
            "checkpoint_dir": str(self.config.data_dir / "checkpoints" / job.id),
            "package": package,
        }
        worker = self.backend.workers.get(run.worker)
        resources = {"GPU": len(run.gpu_ids)} if run.gpu_ids and worker and worker.advertises_gpus else None
        return self.backend.client.submit(
            run_attempt,
            request,
            key=run.key,
            workers=[run.worker],
            allow_other_workers=False,
            resources=resources,
            pure=False,
        )

    # -- views for the API ------------------------------------------------------------
    def cluster_status(self) -> dict[str, Any]:
        views = self._views()
        gpus_total = sum(len(v.gpu_ids) for v in views)
        gpus_free = sum(len(v.free_gpu_ids) for v in views)
        return {
            **self.backend.summary(),
            "workers": [
                {
                    "address": v.address,
                    "name": self.backend.workers[v.address].name,
                    "gpus": list(v.gpu_ids),
                    "free_gpus": list(v.free_gpu_ids),
                    "cpus": v.cpus,
                    "free_cpus": v.free_cpus,
                    "memory": v.memory,
                    "running": sorted(r.job_id for r in self._running.values() if r.worker == v.address),
                }
                for v in views
            ],
            "gpus": {"total": gpus_total, "busy": gpus_total - gpus_free},
            "queue_depth": len(self._queue),
            "running": len(self._running),
            "waiting_on_dependencies": len(self._waiting),
        }
