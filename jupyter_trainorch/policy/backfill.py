"""Backfill: what may start on a worker held for a job ahead, without delaying that job.

A worker is held for the first job that fits its capacity but not what is free now. The
held job's earliest start there is when enough of what runs on it has ended; a later job
that is sure to end by then (its run time is known and short enough) may use what is free
meanwhile. Pure; the clock is passed in.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Mapping

from .wording import Shape

# How many jobs past the point where the walk stops (every worker busy or held) are tried
# for backfill in one decision, as Slurm's ``bf_max_job_test`` bounds its own pass.
BACKFILL_DEPTH = 100

# (expected end, GPUs, CPUs, bytes of memory) of a job that holds part of a worker.
Release = tuple[float, int, float, int]


class Releases:
    """What each worker gets back, and when: the expected ends of the jobs running there
    and of those placed during this decision; and, for each held worker, the earliest
    start of the job it is held for."""

    __slots__ = ("by_worker", "latest", "start")

    def __init__(
        self, running: Iterable[tuple[str, float | None, Shape]], index_of: Mapping[str, int]
    ) -> None:
        self.by_worker: dict[int, list[Release]] = {}
        for worker, ends, (gpus, cpus, memory) in running:
            index = index_of.get(worker)
            if index is not None:
                end = math.inf if ends is None else ends
                self.by_worker.setdefault(index, []).append((end, gpus, cpus, memory))
        for releases in self.by_worker.values():
            releases.sort()
        self.start: dict[int, float] = {}
        self.latest = -math.inf  # the latest known start of a held job

    def add(self, index: int, end: float, shape: Shape) -> None:
        gpus, cpus, memory = shape
        insort(self.by_worker.setdefault(index, []), (end, gpus, cpus, memory))

    def hold(
        self,
        index: int,
        shape: Shape,
        free: tuple[int, float, int],
        memory_counts: bool,
        now: float,
        slack: float,
    ) -> None:
        """Worker ``index`` is held for a job of ``shape``: note when it can start there."""
        gpus, cpus, memory = shape
        free_gpus, free_cpus, free_memory = free

        def fits() -> bool:
            return (
                free_gpus >= gpus
                and free_cpus + slack >= cpus
                and (not memory or not memory_counts or free_memory >= memory)
            )

        start = now if fits() else math.inf
        if start > now:
            for end, g, c, m in self.by_worker.get(index, ()):
                if math.isinf(end):
                    break
                free_gpus, free_cpus, free_memory = free_gpus + g, free_cpus + c, free_memory + m
                if fits():
                    start = max(end, now)
                    break
        self.start[index] = start
        if start < math.inf:
            self.latest = max(self.latest, start)

    def together(self, indices: list[int]) -> None:
        """The workers ``indices`` are held for one gang: it starts on all of them at once,
        when the last one has room."""
        start = max(self.start[index] for index in indices)
        for index in indices:
            self.start[index] = start
        if start < math.inf:
            self.latest = max(self.latest, start)

    def open_until(self, now: float) -> bool:
        """Whether some held worker leaves room for a job that ends in time (a held job
        whose start is unknown leaves none: anything could delay it)."""
        return self.latest > now


def runtime_of(runtimes: Mapping[str, float] | None, job_id: str) -> float | None:
    """A job's known run time, or None when it is unknown or not a usable number."""
    if runtimes is None:
        return None
    seconds = runtimes.get(job_id)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
