"""The working copy of the cluster for one placement decision (``placement.plan``)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence

from .model import WorkerView

# CPU claims are floats (``cpus=0.1``) and sums of them drift; without slack a
# job could be refused over 1e-17 of a core.
CPU_SLACK = 1e-9


class Board:
    """The working copy of the cluster for one ``plan`` call.

    Workers that are not reserved sit in ``buckets[k]`` (``k`` = free GPUs),
    each bucket sorted by ``(free_cpus, address, index)``: best fit is then
    the first entry, from the smallest big-enough bucket, past the bisection
    point for the job's CPUs. That keeps a decision at O(buckets * log workers)
    rather than a pass over every worker.
    """

    __slots__ = (
        "address",
        "buckets",
        "cap_cpus",
        "cap_gpus",
        "cap_memory",
        "entries",
        "free_cpus",
        "free_ids",
        "free_memory",
        "gpu_ids",
        "held",
        "largest_gpus",
        "open",
        "unreserved",
    )

    def __init__(self, workers: Sequence[WorkerView]) -> None:
        self.address: list[str] = []
        self.cap_gpus: list[int] = []
        self.cap_cpus: list[float] = []
        self.cap_memory: list[int] = []
        self.free_ids: list[tuple[str, ...]] = []
        self.free_cpus: list[float] = []
        self.free_memory: list[int] = []
        self.entries: list[tuple[float, str, int]] = []
        self.held: list[bool] = [False] * len(workers)
        self.gpu_ids: list[tuple[str, ...]] = [tuple(w.gpu_ids) for w in workers]
        top = 0
        for index, worker in enumerate(workers):
            # A repeated id in the view must not let two jobs share one GPU.
            ids = tuple(dict.fromkeys(worker.free_gpu_ids))
            free_cpus = clamp(float(worker.free_cpus))
            self.address.append(worker.address)
            self.cap_gpus.append(max(len(worker.gpu_ids), len(ids)))
            self.cap_cpus.append(max(float(worker.cpus), free_cpus))
            self.cap_memory.append(worker.memory)
            self.free_ids.append(ids)
            self.free_cpus.append(free_cpus)
            self.free_memory.append(worker.free_memory if worker.memory else 0)
            self.entries.append((free_cpus, worker.address, index))
            top = max(top, len(ids))
        self.buckets: list[list[tuple[float, str, int]]] = [[] for _ in range(top + 1)]
        for entry in self.entries:
            self.buckets[len(self.free_ids[entry[2]])].append(entry)
        for bucket in self.buckets:
            bucket.sort()
        self.unreserved = len(self.entries)
        self.largest_gpus = max(self.cap_gpus, default=0)
        # Workers that can still take a job claiming some CPU.
        self.open = sum(1 for cpus in self.free_cpus if cpus > 0.0)

    def fit(self, gpus: int, cpus: float, memory: int) -> int | None:
        """The best-fitting unreserved worker for the demand now, or None."""
        return next(self.fits(gpus, cpus, memory), None)

    def fits(self, gpus: int, cpus: float, memory: int) -> Iterator[int]:
        """The unreserved workers the demand fits on now, best fit first."""
        buckets = self.buckets
        floor = (cpus - CPU_SLACK,)
        for k in range(gpus, len(buckets)):
            bucket = buckets[k]
            for at in range(bisect_left(bucket, floor), len(bucket)):
                index = bucket[at][2]
                if not memory or not self.cap_memory[index] or self.free_memory[index] >= memory:
                    yield index

    def reservable(self, gpus: int, cpus: float, memory: int) -> int | None:
        """The unreserved worker to hold for a demand that fits no one now."""
        return next(self.reservables(gpus, cpus, memory), None)

    def reservables(self, gpus: int, cpus: float, memory: int) -> Iterator[int]:
        """The unreserved workers whose capacity holds the demand, most free first."""
        cap_gpus, cap_cpus, cap_memory = self.cap_gpus, self.cap_cpus, self.cap_memory
        cpus -= CPU_SLACK
        for bucket in reversed(self.buckets):
            # Groups of equal free CPUs, most first; inside a group the
            # entries run by address, so the first match is the one.
            end = len(bucket)
            while end:
                start = bisect_left(bucket, (bucket[end - 1][0],), 0, end)
                for at in range(start, end):
                    index = bucket[at][2]
                    if (
                        cap_gpus[index] >= gpus
                        and cap_cpus[index] >= cpus
                        and (not memory or not cap_memory[index] or cap_memory[index] >= memory)
                    ):
                        yield index
                end = start

    def _holds(self, index: int, gpus: int, cpus: float, memory: int) -> bool:
        cap_memory = self.cap_memory[index]
        return (
            self.cap_gpus[index] >= gpus
            and self.cap_cpus[index] + CPU_SLACK >= cpus
            and (not memory or not cap_memory or cap_memory >= memory)
        )

    def _unlist(self, index: int) -> None:
        entry = self.entries[index]
        bucket = self.buckets[len(self.free_ids[index])]
        del bucket[bisect_left(bucket, entry)]

    def take(self, index: int, gpus: int, cpus: float, memory: int) -> tuple[str, ...]:
        """Consume the demand on a worker; returns the GPU ids handed out."""
        self._unlist(index)
        ids = self.free_ids[index]
        taken, self.free_ids[index] = ids[:gpus], ids[gpus:]
        before = self.free_cpus[index]
        after = clamp(before - cpus)
        self.free_cpus[index] = after
        if before > 0.0 and after == 0.0:
            self.open -= 1
        if memory and self.cap_memory[index]:
            self.free_memory[index] -= memory
        entry = (after, self.address[index], index)
        self.entries[index] = entry
        insort(self.buckets[len(self.free_ids[index])], entry)
        return taken

    def reserve(self, index: int) -> None:
        self.held[index] = True
        self._unlist(index)
        self.unreserved -= 1
        if self.free_cpus[index] > 0.0:
            self.open -= 1

    def free(self, index: int) -> tuple[int, float, int]:
        return len(self.free_ids[index]), self.free_cpus[index], self.free_memory[index]

    def backfill_fit(self, held: Sequence[int], gpus: int, cpus: float, memory: int) -> int | None:
        """Best fit among the held workers ``held`` for the demand now, or None."""
        best: tuple[int, float, str, int] | None = None
        for index in held:
            free_gpus, free_cpus, free_memory = self.free(index)
            if (
                free_gpus >= gpus
                and free_cpus + CPU_SLACK >= cpus
                and (not memory or not self.cap_memory[index] or free_memory >= memory)
            ):
                key = (free_gpus, free_cpus, self.address[index], index)
                best = key if best is None or key < best else best
        return None if best is None else best[3]

    def take_held(self, index: int, gpus: int, cpus: float, memory: int) -> tuple[str, ...]:
        """Consume the demand on a held worker (it is in no bucket)."""
        ids = self.free_ids[index]
        taken, self.free_ids[index] = ids[:gpus], ids[gpus:]
        self.free_cpus[index] = clamp(self.free_cpus[index] - cpus)
        if memory and self.cap_memory[index]:
            self.free_memory[index] -= memory
        return taken


def clamp(cpus: float) -> float:
    return 0.0 if cpus <= CPU_SLACK else cpus
