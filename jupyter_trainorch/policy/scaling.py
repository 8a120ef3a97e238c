"""How many workers the cluster should have: scaling on the queue, not on Dask's tasks.

Dask's own adaptive scaling counts the tasks the scheduler holds, and a queued job is not
in Dask until it is placed. This sizes one pool of same-shaped workers from the jobs that
wait for capacity: enough new workers for what does not fit on the free part of the
current ones, up to the pool's maximum; and, once nothing waits, the workers idle for
longer than the grace period may go, down to the minimum. A worker that runs a job is
never proposed for closing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .board import CPU_SLACK
from .model import QueuedJob, WorkerView
from .wording import demand_text, names_text, plural


@dataclass(frozen=True, slots=True)
class Pool:
    """Workers of one shape that the cluster manager can add and remove."""

    gpus: int = 0  # GPUs per worker
    cpus: float = 1.0  # job slots (CPUs) per worker
    memory: int = 0  # bytes per worker, 0 = unknown
    minimum: int = 0
    maximum: int = 1
    grace: float = 300.0  # seconds a worker stays idle before it may be closed

    def worker(self, address: str) -> WorkerView:
        """A worker of this shape, free: for judging what the pool could ever hold."""
        ids = tuple(str(i) for i in range(self.gpus))
        return WorkerView(address, ids, ids, self.cpus, self.cpus, self.memory, self.memory)


@dataclass(frozen=True, slots=True)
class Scaling:
    """The wanted number of workers, and the idle ones that may be closed to reach it."""

    target: int
    close: tuple[str, ...] = ()
    reason: str = ""


def scale(
    pool: Pool,
    waiting: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    idle_since: Mapping[str, float],
    now: float,
) -> Scaling:
    """``waiting``: the jobs that wait for capacity (not for a quota or a dependency), in
    queue order; ``workers`` what the running jobs leave free now; ``idle_since`` when each
    worker that runs nothing became idle (the same clock as ``now``)."""
    count = len(workers)
    new, unfit, claimed = _new_workers_needed(pool, waiting, workers)
    if new:
        target = max(pool.minimum, min(pool.maximum, count + new))
        if target <= count:
            return Scaling(target)  # at the maximum: the jobs wait for running ones to end
        wanted = [job for job in waiting if job.id not in unfit]
        return Scaling(target, reason=_growth_reason(wanted, count, target, pool))
    if count < pool.minimum:
        return Scaling(
            pool.minimum, reason=f"{count} → {plural(pool.minimum, 'worker')} (the minimum)"
        )
    idle = sorted(
        (since, addr)
        for addr, since in idle_since.items()
        if now - since >= pool.grace and addr not in claimed and _is_free(addr, workers)
    )
    close = tuple(addr for _, addr in idle[: max(0, count - pool.minimum)])
    target = max(pool.minimum, min(pool.maximum, count - len(close)))
    if not close:
        return Scaling(target)
    reason = (
        f"closing {plural(len(close), 'worker')} idle for over {pool.grace:g} s "
        f"({names_text(list(close))}): {count} → {plural(count - len(close), 'worker')}"
    )
    return Scaling(target, close, reason)


def _is_free(address: str, workers: Sequence[WorkerView]) -> bool:
    for worker in workers:
        if worker.address == address:
            return (
                worker.free_gpu_ids == worker.gpu_ids
                and worker.free_cpus >= worker.cpus - CPU_SLACK
            )
    return False


def _new_workers_needed(
    pool: Pool, waiting: Sequence[QueuedJob], workers: Sequence[WorkerView]
) -> tuple[int, set[str], set[str]]:
    """New pool workers the waiting jobs need after filling the free part of the current
    ones (first fit, largest first), the jobs no pool worker could ever hold, and the
    current workers that waiting jobs are about to use."""
    free = [
        [len(w.free_gpu_ids), w.free_cpus, w.free_memory if w.memory else None] for w in workers
    ]
    opened: list[list[float | int | None]] = []
    unfit: set[str] = set()
    claimed: set[str] = set()
    pieces = [(job, node) for job in waiting for node in range(max(1, job.nodes))]
    pieces.sort(key=lambda piece: (-piece[0].gpus, -piece[0].cpus))
    for job, _ in pieces:
        if not _holds(pool.gpus, pool.cpus, pool.memory or None, job):
            unfit.add(job.id)
            continue
        index = next((i for i, s in enumerate(free) if _holds(*s, job)), None)
        if index is not None:
            claimed.add(workers[index].address)
        slot = free[index] if index is not None else None
        slot = slot or next((s for s in opened if _holds(*s, job)), None)
        if slot is None:
            slot = [pool.gpus, pool.cpus, pool.memory or None]
            opened.append(slot)
        slot[0] = int(slot[0] or 0) - job.gpus
        slot[1] = float(slot[1] or 0) - job.cpus
        if slot[2] is not None and job.memory:
            slot[2] = int(slot[2]) - job.memory
    return len(opened), unfit, claimed


def _holds(gpus: float | None, cpus: float | None, memory: float | None, job: QueuedJob) -> bool:
    return (
        (gpus or 0) >= job.gpus
        and (cpus or 0) + CPU_SLACK >= job.cpus
        and (memory is None or not job.memory or memory >= job.memory)
    )


def _growth_reason(waiting: Sequence[QueuedJob], count: int, target: int, pool: Pool) -> str:
    shapes = sorted({(job.gpus, job.cpus, job.memory) for job in waiting}, reverse=True)
    wanted = demand_text(shapes[0]) + (" or less" if len(shapes) > 1 else "")
    capped = " (the maximum)" if target == pool.maximum else ""
    return (
        f"{plural(len(waiting), 'job')} {'waits' if len(waiting) == 1 else 'wait'} for "
        f"capacity ({wanted}{'' if len(waiting) == 1 else ' each'}): "
        f"{count} → {plural(target, 'worker')}{capped}"
    )
