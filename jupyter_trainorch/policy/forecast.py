"""When each waiting job is expected to start: :func:`~.placement.plan` replayed on a clock.

Pure, like the placement it replays: the running jobs' expected ends and the queued jobs'
expected run times come in, start times go out. A job that waits on a job of unknown run time
gets no estimate rather than a guess: the forecast says only what the known run times decide.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .placement import QueuedJob, WorkerView, plan

# Each step of the replay is one plan() over the waiting jobs; a long queue of jobs with
# known run times stops here rather than costing a request seconds.
MAX_STEPS = 400


@dataclass(frozen=True, slots=True)
class Holding:
    """What a running job holds on a worker, and when it is expected to let go."""

    worker: str
    gpu_ids: tuple[str, ...] = ()
    cpus: float = 1.0
    memory: int = 0
    ends: float | None = None  # seconds on the caller's clock; None = unknown


def estimate_starts(
    queue: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    running: Sequence[Holding],
    runtimes: Mapping[str, float],
    now: float,
    wanted: frozenset[str] | None = None,
) -> dict[str, float]:
    """Expected start of each queued job (of ``wanted``) that the known run times decide.

    ``queue`` is in dispatch order, ``workers`` as :func:`plan` takes them (what the running
    jobs leave free), ``runtimes`` the expected seconds of queued jobs by id. A job started by
    the replay holds its resources for its run time, or to the end of the forecast when its
    run time is unknown. Jobs absent from the result have no estimate.
    """
    views = {worker.address: worker for worker in workers}
    ends: list[tuple[float, int, Holding]] = [
        (held.ends, i, held) for i, held in enumerate(running) if held.ends is not None
    ]
    heapq.heapify(ends)
    tiebreak = len(running)
    by_id = {job.id: job for job in queue}
    waiting = list(queue)
    starts: dict[str, float] = {}
    clock = now
    for _ in range(MAX_STEPS):
        placed = plan(waiting, list(views.values()))
        for placement in placed:
            job = by_id[placement.job_id]
            starts[job.id] = clock
            for worker, gpu_ids in placement.slots():  # every rank of a gang
                held = Holding(worker, gpu_ids, max(job.cpus, 0.0), max(job.memory, 0))
                views[held.worker] = _take(views[held.worker], held)
                if job.id in runtimes:
                    heapq.heappush(ends, (clock + runtimes[job.id], tiebreak, held))
                    tiebreak += 1
        if placed:
            waiting = [job for job in waiting if job.id not in starts]
        if not waiting or not ends or (wanted is not None and wanted <= starts.keys()):
            break
        clock = max(clock, ends[0][0])
        while ends and ends[0][0] <= clock:
            _, _, done = heapq.heappop(ends)
            if done.worker in views:
                views[done.worker] = _give_back(views[done.worker], done)
    return {job_id: start for job_id, start in starts.items() if wanted is None or job_id in wanted}


def _take(view: WorkerView, held: Holding) -> WorkerView:
    return replace(
        view,
        free_gpu_ids=tuple(g for g in view.free_gpu_ids if g not in held.gpu_ids),
        free_cpus=view.free_cpus - held.cpus,
        free_memory=max(0, view.free_memory - held.memory),
    )


def _give_back(view: WorkerView, held: Holding) -> WorkerView:
    freed = set(view.free_gpu_ids) | set(held.gpu_ids)
    return replace(
        view,
        # In the worker's own order, so the replay picks GPU ids as the real placement would.
        free_gpu_ids=tuple(g for g in view.gpu_ids if g in freed),
        free_cpus=min(view.cpus, view.free_cpus + held.cpus),
        free_memory=min(view.memory, view.free_memory + held.memory),
    )
