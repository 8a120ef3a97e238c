"""Fair share inside a priority class: users take turns, weighted by what they used lately.

Pure. Priority classes stay strict; only the order of the jobs inside one class changes.
Each job's turn is its user's recent GPU use (GPU-seconds, decaying with a half-life) plus
the GPU-seconds of that user's jobs ahead of it in the class, so one user's 200-job sweep
no longer keeps another user's single job waiting behind all of it, and a user who has had
the GPUs all morning yields to one who has not.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from .placement import QueuedJob

# What a queued job is expected to take when nothing better is known: one GPU-hour per GPU.
DEFAULT_JOB_SECONDS = 3600.0


def fair_order(
    queue: Sequence[QueuedJob],
    usage: Mapping[str, float],
    runtimes: Mapping[str, float] | None = None,
) -> list[QueuedJob]:
    """``queue`` (in :func:`~.placement.queue_key` order) in the order fair share dispatches it.

    ``usage``: each user's decayed GPU-seconds (:func:`decayed_usage`); ``runtimes``: the
    expected seconds of queued jobs by id, where known. Within a class, preempted jobs
    (``resumes``) go first and ties keep submission order; a queue of one user comes back
    unchanged.
    """
    if len({job.user for job in queue}) < 2:
        return list(queue)
    ahead: dict[tuple[int, str], float] = {}  # (class, user) -> GPU-seconds queued so far
    keyed = []
    for job in queue:
        slot = (job.priority, job.user)
        turn = usage.get(job.user, 0.0) + ahead.get(slot, 0.0)
        seconds = (runtimes or {}).get(job.id, DEFAULT_JOB_SECONDS)
        ahead[slot] = ahead.get(slot, 0.0) + max(job.gpus, 1) * seconds
        keyed.append(((-job.priority, 0 if job.resumes else 1, turn, job.seq), job))
    keyed.sort(key=lambda pair: pair[0])
    return [job for _, job in keyed]


class FairQueue(Sequence[QueuedJob]):
    """The queue kept by class and user, read in :func:`fair_order`'s order lazily.

    For a caller that decides often over a long queue (the trace simulator): :func:`plan`
    walks only the head of the queue, so only the head is put in order, at O(log users) a
    job, instead of sorting the whole queue at every decision.
    """

    def __init__(self) -> None:
        self._groups: dict[int, dict[str, list[QueuedJob]]] = {}  # class -> user -> by seq
        self._resuming: dict[int, list[QueuedJob]] = {}  # class -> preempted jobs, by seq
        self._length = 0
        self._usage: Mapping[str, float] = {}
        self._order: list[QueuedJob] = []
        self._stream: Iterator[QueuedJob] = iter(())

    def add(self, job: QueuedJob) -> None:
        if job.resumes:
            jobs = self._resuming.setdefault(job.priority, [])
            self._groups.setdefault(job.priority, {})
        else:
            jobs = self._groups.setdefault(job.priority, {}).setdefault(job.user, [])
        bisect.insort(jobs, job, key=lambda queued: queued.seq)
        self._length += 1

    def discard(self, started: Iterable[QueuedJob]) -> None:
        """Take out jobs that started (near the head of their user's list: cheap)."""
        for job in started:
            if job.resumes:
                self._resuming[job.priority].remove(job)
                self._length -= 1
                continue
            users = self._groups[job.priority]
            users[job.user].remove(job)
            if not users[job.user]:
                del users[job.user]
            self._length -= 1

    def smallest_gpus(self) -> dict[int, int]:
        """Per class, the fewest GPUs a waiting job of it needs."""
        smallest: dict[int, int] = {}
        for priority, users in self._groups.items():
            for jobs in [*users.values(), self._resuming.get(priority, [])]:
                for job in jobs:
                    smallest[priority] = min(smallest.get(priority, job.gpus), job.gpus)
        return smallest

    def ordered(self, usage: Mapping[str, float]) -> FairQueue:
        """Start reading the queue afresh in fair order for ``usage``."""
        self._usage = usage
        self._order = []
        self._stream = self._merge()
        return self

    def _merge(self) -> Iterator[QueuedJob]:
        for priority in sorted(self._groups, reverse=True):
            yield from list(self._resuming.get(priority, ()))
            heads = [
                (self._usage.get(user, 0.0), jobs[0].seq, user, 0)
                for user, jobs in self._groups[priority].items()
                if jobs
            ]
            heapq.heapify(heads)
            while heads:
                turn, _, user, index = heapq.heappop(heads)
                jobs = self._groups[priority][user]
                job = jobs[index]
                yield job
                if index + 1 < len(jobs):
                    turn += max(job.gpus, 1) * DEFAULT_JOB_SECONDS
                    heapq.heappush(heads, (turn, jobs[index + 1].seq, user, index + 1))

    def _fill(self, upto: int) -> None:
        while len(self._order) <= upto:
            try:
                self._order.append(next(self._stream))
            except StopIteration:
                return

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[QueuedJob]:
        position = 0
        while position < self._length:
            self._fill(position)
            if position >= len(self._order):
                return
            yield self._order[position]
            position += 1

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            self._fill(self._length)
            return self._order[index]
        if index < 0:
            index += self._length
        self._fill(index)
        return self._order[index]


def decayed_usage(
    holdings: Iterable[tuple[str, int, float, float | None]], now: float, half_life: float
) -> dict[str, float]:
    """Each user's GPU-seconds, a second ``t`` ago counting ``2 ** (-t / half_life)``.

    ``holdings``: ``(user, gpus, start, end)`` of attempts, ``end`` None while running.
    """
    rate = math.log(2) / half_life
    usage: dict[str, float] = {}
    for user, gpus, start, end in holdings:
        stop = now if end is None else min(end, now)
        if gpus <= 0 or stop <= start:
            continue
        # The integral of gpus * exp(-rate * (now - t)) dt from start to stop.
        held = gpus * (math.exp(-rate * (now - stop)) - math.exp(-rate * (now - start))) / rate
        usage[user] = usage.get(user, 0.0) + held
    return usage
