"""Placing jobs: each scheduling round asks the policy for one decision (what starts
where, with backfill on time limits; which running jobs are preempted for whom) and carries
it out: attempts are stored, then handed to Dask; victims are stopped. It also answers why a
queued job waits and when it is expected to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .. import policy
from ..cluster import ClusterBackend
from ..policy.quota import within_quota
from ..runner.protocol import attempt_key
from ..store import STARTING, AttemptRecord, JobStore, iso
from . import gangs
from .attempts import AttemptTracker, Running
from .autoscale import Autoscaler
from .estimates import StartForecast
from .outcomes import JobOutcomes
from .queue import JobQueue
from .quotas import Quotas
from .shares import FairShare

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        backend: ClusterBackend,
        queue: JobQueue,
        attempts: AttemptTracker,
        outcomes: JobOutcomes,
        shares: FairShare,
        quotas: Quotas,
        preemption: policy.PreemptionRules | None,
        clock: Callable[[], float],
        spawn: Callable[[Any], asyncio.Task[Any]],
        wake: Callable[[], None],
        draining: Callable[[], bool],
        autoscaler: Autoscaler | None = None,
        excluded: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.store = store
        self.backend = backend
        self.queue = queue
        self.attempts = attempts
        self.outcomes = outcomes
        self.shares = shares
        self.quotas = quotas
        self.preemption = preemption
        self.clock = clock
        self.spawn = spawn
        self.wake = wake
        self.draining = draining
        self.autoscaler = autoscaler
        self.excluded = excluded  # workers left out of placement (worker_health), until when
        self.forecast = StartForecast(store)
        self._recheck: asyncio.TimerHandle | None = None  # when a victim becomes old enough

    def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        if self.autoscaler is not None:
            self.autoscaler.close()

    def waiting(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For the queued jobs of ``job_ids``: the queue position (1 = dispatched next), the
        policy's sentence why each has not started and, where run times tell, its expected
        start; for the running ones, their expected end where it can be told."""
        found: dict[str, dict[str, Any]] = {}
        held = self.attempts.held()
        wanted = set(job_ids)
        running = {run.job_id for run in held} & wanted
        queued = any(job_id in self.queue for job_id in wanted)
        if not running and not queued:
            return found
        order = self.shares.order(self.queue.items)
        forecast = self.forecast.current(order, self.views, held)
        found.update(
            {j: {"estimated_end": iso(forecast.ends[j])} for j in running if j in forecast.ends}
        )
        if not queued:
            return found
        positions = {job.id: n for n, job in enumerate(order, 1) if job.id in wanted}
        reasons = self._decide(order, explain=list(positions)).reasons
        starts = forecast.starts
        for job_id, n in positions.items():
            found[job_id] = {
                "queue_position": n,
                "wait_reason": reasons.get(job_id, "starting now"),
            }
            if job_id in starts:
                found[job_id]["estimated_start"] = iso(starts[job_id])
        return found

    def gpus_held(self) -> tuple[dict[str, int], dict[str, int]]:
        """GPUs the running attempts hold, by user and by quota group (every rank counted)."""
        users: dict[str, int] = {}
        groups: dict[str, int] = {}
        for run in self.attempts.held():
            gpus = sum(len(ids) for _, ids in run.slots())
            users[run.user] = users.get(run.user, 0) + gpus
            for group in run.groups:
                groups[group] = groups.get(group, 0) + gpus
        return users, groups

    def _gpu_quotas(self) -> dict[str, Any]:
        caps = self.quotas.gpu_caps({job.user for job in self.queue.items})
        group_caps = self.quotas.group_gpu_caps()
        if not caps and not group_caps:
            return {}
        users, groups = self.gpus_held()
        return {
            "gpu_caps": caps,
            "gpus_held": users,
            "group_caps": group_caps,
            "groups_held": groups,
        }

    def holdings(self, run: Running) -> list[tuple[str, tuple[str, ...], float, int]]:
        """What a running attempt holds of each worker: (worker, GPU ids, CPUs, memory).
        Each rank holds its worker; GPUs it borrowed from other workers of its host (a job
        with more GPUs than one worker has) are held on those workers."""
        workers = self.backend.workers
        held = []
        for worker, gpu_ids in run.slots():
            own = workers[worker].gpu_ids if worker in workers else gpu_ids
            held.append((worker, tuple(g for g in gpu_ids if g in own), run.cpus, run.memory))
            foreign = [g for g in gpu_ids if g not in own]
            if not foreign:
                continue
            host = policy.host_of(worker)
            for addr, info in sorted(workers.items()):
                lent = tuple(g for g in foreign if g in info.gpu_ids)
                if addr != worker and lent and policy.host_of(addr) == host:
                    held.append((addr, lent, 0.0, 0))
        return held

    def views(self) -> list[policy.WorkerView]:
        held_gpus: dict[str, set[str]] = {}
        held_cpus: dict[str, float] = {}
        held_memory: dict[str, int] = {}
        for run in self.attempts.held():
            for worker, gpu_ids, cpus, memory in self.holdings(run):
                held_gpus.setdefault(worker, set()).update(gpu_ids)
                held_cpus[worker] = held_cpus.get(worker, 0.0) + cpus
                held_memory[worker] = held_memory.get(worker, 0) + memory
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

    def _decide(
        self, order: list[policy.QueuedJob], explain: list[str] | None = None
    ) -> policy.Decision:
        """The policy's decision now: what starts where (with backfill on known time
        limits), which running jobs are preempted for whom, why the rest waits."""
        now = self.clock()
        held = self.attempts.held()
        excluded = self.excluded()
        return policy.decide(
            order,
            [view for view in self.views() if view.address not in excluded],
            now=now,
            running=[
                view
                for run in held
                for view in self._running_views(run)
                if view.worker not in excluded
            ],  # fmt: skip
            runtimes=self.queue.time_limits,
            rules=self.preemption,
            stopping={run.job_id for run in held if run.preempted_for},
            explain=explain,
            **self._gpu_quotas(),
        )

    def _running_views(self, run: Running) -> list[policy.RunningJob]:
        """One per worker it holds part of (the ranks of a multi-node job, the workers a
        job borrowed GPUs from)."""
        return [
            policy.RunningJob(
                run.job_id, worker, run.priority, gpus=len(gpu_ids), cpus=cpus,
                memory=memory, user=run.user, started=run.started,
                checkpointed=run.checkpointed,
                ends=run.started + run.timeout if run.timeout else None,
            )
            for worker, gpu_ids, cpus, memory in self.holdings(run)
        ]  # fmt: skip

    def schedule(self) -> None:
        """One round: start what fits now, then size the cluster for what still waits."""
        self._place()
        if self.autoscaler is not None and not self.draining():
            self.autoscaler.round(self.waiting_for_capacity(), self.views())

    def waiting_for_capacity(self) -> list[policy.QueuedJob]:
        """The queued jobs, in order, that free GPUs or more workers would let start (not
        those a GPU quota holds back)."""
        if not len(self.queue):
            return []
        quotas = self._gpu_quotas()
        return within_quota(
            self.shares.order(self.queue.items), quotas.get("gpu_caps"), quotas.get("gpus_held"),
            quotas.get("group_caps"), quotas.get("groups_held"),
        )  # fmt: skip

    def _place(self) -> None:
        if not len(self.queue) or not self.backend.workers or self.draining():
            return
        decision = self._decide(self.shares.order(self.queue.items))
        for preemption in decision.preemptions:
            for victim in preemption.victims:
                run = self.attempts.running.get(victim)
                if run is not None and not run.preempted_for:
                    log.info("preempting %s on %s for %s", victim, run.worker, preemption.job_id)
                    self.spawn(self.attempts.preempt(run, preemption.job_id))
        self._recheck_when_preemptible()
        if not decision.placements:
            return
        chosen = [(p, self.queue.get(p.job_id)) for p in decision.placements]
        for _, item in chosen:
            self.queue.remove(item.id)
        self.dispatch(chosen)

    def _recheck_when_preemptible(self) -> None:
        """Decide again when a running job reaches the minimum run time, if a job that may
        preempt waits: no other event would come then."""
        rules = self.preemption
        # The queue runs highest priority first: its head says whether any job may preempt.
        if rules is None or not len(self.queue) or self.queue.items[0].priority < rules.priority:
            return
        now = self.clock()
        ripe = [run.started + rules.min_runtime for run in self.attempts.held()]
        later = min((t for t in ripe if t > now), default=None)
        if later is None:
            return
        if self._recheck is not None:
            self._recheck.cancel()
        self._recheck = asyncio.get_running_loop().call_later(later - now + 0.05, self.wake)

    def dispatch(self, placements: list[tuple[policy.Placement, policy.QueuedJob]]) -> None:
        """Store every attempt first, then hand them to Dask: an attempt that runs is
        always one the store knows (a restart looks it up instead of running it again)."""
        now = self.clock()
        jobs = self.store.get_jobs([item.id for _, item in placements], with_packages=True)
        attempts, changes, launches = [], [], []
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
                user=job.user,
                groups=tuple(job.spec.get("quota_groups") or ()),
                priority=job.priority,
                started=now,
                timeout=job.spec.get("timeout"),
                ranks=gangs.extra_ranks(job.id, n, placement.ranks),
                # Stored with the attempt: its process logs into this run from its first line.
                mlflow_run_id=self.attempts.tracking.reserve_run(job),
            )
            attempts.append(
                AttemptRecord(job.id, n, STARTING, placement.worker, list(placement.gpu_ids),
                              started=now, mlflow_run_id=run.mlflow_run_id)
            )  # fmt: skip
            fields: dict[str, Any] = {"state": STARTING, "not_before": None}
            if job.started is None:  # with the job's run, when one was reserved
                fields.update(started=now, **self.attempts.tracking.reserve_job_run(job))
            changes.append((job.id, fields))
            launches.append((job, run, package))
        self.store.add_attempts(attempts)
        self.store.update_jobs(changes)
        for job, run, package in launches:
            self.attempts.launch(job, run, package)
            self.outcomes.publish(job, STARTING)
