"""One scheduling decision: what starts where, what is preempted for whom, and why the
rest waits. The orchestrator's scheduling loop and the trace simulator both call
:func:`decide`; it combines :func:`.placement.plan` (with backfill) and
:func:`.preemption.choose_preemptions`. Pure; the clock is passed in."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .placement import Placement, QueuedJob, RunningJob, WorkerView, plan
from .preemption import Preemption, PreemptionRules, choose_preemptions
from .quota import GpuHoldings


@dataclass(slots=True)
class Decision:
    placements: list[Placement] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # waiting job -> why


def decide(
    queue: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    *,
    now: float = 0.0,
    running: Sequence[RunningJob] = (),
    runtimes: Mapping[str, float] | None = None,
    rules: PreemptionRules | None = None,
    stopping: Collection[str] = (),
    gpu_caps: Mapping[str, int] | None = None,
    gpus_held: Mapping[str, int] | None = None,
    group_caps: Mapping[str, int] | None = None,
    groups_held: Mapping[str, int] | None = None,
    explain: Collection[str] | None = None,
) -> Decision:
    """``queue`` in dispatch order; ``running`` what holds the workers now; ``runtimes``
    the known run times of queued jobs (backfill); ``rules`` turn preemption on;
    ``stopping`` running jobs already being preempted; ``explain`` the waiting jobs that
    want a reason (None: none)."""
    reasons: dict[str, str] | None = {} if explain is not None else None
    wanted = frozenset(explain) if explain is not None else None
    placements = plan(
        queue, workers, reasons, wanted, gpu_caps, gpus_held,
        group_caps=group_caps, groups_held=groups_held,
        now=now, running=running, runtimes=runtimes,
    )  # fmt: skip
    decision = Decision(placements, [], {})
    if rules is not None:
        placed = {p.job_id for p in placements}
        urgent = []
        for job in queue:
            if job.priority < rules.priority:
                break  # the queue runs by class: nothing below preempts
            if job.id not in placed:
                urgent.append(job)
        if urgent:
            started = _placed_jobs(queue, placed)
            holdings = GpuHoldings(gpu_caps, gpus_held, group_caps, groups_held)
            if holdings.capped:
                for job in started.values():
                    holdings.add(job, job.gpus * job.nodes)
                urgent = [j for j in urgent if holdings.breach(j, j.gpus * j.nodes) is None]
            left = _after(workers, placements, started)
            decision.preemptions, said = choose_preemptions(
                urgent, left, running, now, rules, stopping
            )
            if reasons is not None:
                reasons.update(said)
    if reasons is not None:
        decision.reasons = {k: v for k, v in reasons.items() if wanted is None or k in wanted}
    return decision


def _placed_jobs(queue: Sequence[QueuedJob], placed: set[str]) -> dict[str, QueuedJob]:
    found: dict[str, QueuedJob] = {}
    if placed:
        for job in queue:  # placed jobs are near the head: stop once all are found
            if job.id in placed:
                found[job.id] = job
                if len(found) == len(placed):
                    break
    return found


def _after(
    workers: Sequence[WorkerView], placements: Sequence[Placement], started: Mapping[str, QueuedJob]
) -> list[WorkerView]:
    """The workers with what this decision's placements take away."""
    if not placements:
        return list(workers)
    # (job, GPU ids) of every rank placed on a worker: a gang takes a part of several.
    by_worker: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for placement in placements:
        for worker, gpu_ids in placement.slots():
            by_worker.setdefault(worker, []).append((placement.job_id, gpu_ids))
    views = []
    for view in workers:
        taken = by_worker.get(view.address)
        if taken:
            ids = {g for _, gpu_ids in taken for g in gpu_ids}
            view = replace(
                view,
                free_gpu_ids=tuple(g for g in view.free_gpu_ids if g not in ids),
                free_cpus=view.free_cpus - sum(started[job_id].cpus for job_id, _ in taken),
                free_memory=view.free_memory - sum(started[job_id].memory for job_id, _ in taken),
            )
        views.append(view)
    return views
