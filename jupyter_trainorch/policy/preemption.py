"""Preemption: which running jobs an urgent job that cannot start may stop.

Pure; the clock is passed in. A waiting job of a preempting class (``PreemptionRules``)
that no worker has room for now may take a worker's place from running jobs of a lower
priority that have run at least ``min_runtime``. Victims are chosen lowest priority first,
then least work lost (time since their last checkpoint, else since they started); of the
workers where that frees enough, the one whose victims matter least is taken. Jobs already
being stopped for a waiting job (``stopping``) count as freed for it, so a decision made
while victims are still in their grace period is not made twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .placement import QueuedJob, RunningJob, WorkerView, fit_error
from .wording import names_text

# Preemption is off when a class this high preempts.
NEVER = 10**9
DEFAULT_MIN_RUNTIME = 600.0


@dataclass(frozen=True, slots=True)
class PreemptionRules:
    """``priority``: jobs at or above it may preempt (urgent = 300; ``NEVER``: off).
    ``min_runtime``: seconds a job runs before it may be preempted."""

    priority: int = 300
    min_runtime: float = DEFAULT_MIN_RUNTIME


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop ``victims`` on ``worker`` so that ``job_id`` starts there."""

    job_id: str
    worker: str
    victims: tuple[str, ...]


@dataclass(slots=True)
class _Room:
    gpus: int
    cpus: float
    memory: int

    def holds(self, job: QueuedJob, memory_counts: bool) -> bool:
        return (
            self.gpus >= job.gpus
            and self.cpus + 1e-9 >= job.cpus
            and (not job.memory or not memory_counts or self.memory >= job.memory)
        )

    def add(self, job: RunningJob) -> None:
        self.gpus += job.gpus
        self.cpus += job.cpus
        self.memory += job.memory

    def sub(self, job: QueuedJob) -> None:
        self.gpus -= job.gpus
        self.cpus -= job.cpus
        self.memory -= job.memory


def choose_preemptions(
    waiting: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    running: Sequence[RunningJob],
    now: float,
    rules: PreemptionRules,
    stopping: Collection[str] = (),
) -> tuple[list[Preemption], dict[str, str]]:
    """For the jobs of ``waiting`` (in dispatch order, none of them placed now), the
    preemptions to make, and for the preempting jobs a sentence saying so. ``workers``
    show what is free after this decision's placements."""
    preemptions: list[Preemption] = []
    reasons: dict[str, str] = {}
    rooms = {w.address: _Room(len(w.free_gpu_ids), w.free_cpus, w.free_memory) for w in workers}
    memory_counts = {w.address: bool(w.memory) for w in workers}
    freeing = {w.address: _Room(0, 0.0, 0) for w in workers}
    by_worker: dict[str, list[RunningJob]] = {}
    for job in running:
        if job.worker in rooms:
            if job.id in stopping:
                freeing[job.worker].add(job)
            else:
                by_worker.setdefault(job.worker, []).append(job)
    for job in waiting:
        # A gang never preempts (policy.gang): it waits for its workers.
        if (
            job.priority < rules.priority
            or job.nodes > 1
            or fit_error(job.gpus, job.cpus, job.memory, workers)
        ):
            continue
        # Room that jobs being stopped already make: claimed by the first job it serves.
        served = False
        for address, room in rooms.items():
            soon = _Room(room.gpus + freeing[address].gpus, room.cpus + freeing[address].cpus,
                         room.memory + freeing[address].memory)  # fmt: skip
            if freeing[address].gpus or freeing[address].cpus:
                if soon.holds(job, memory_counts[address]):
                    soon.sub(job)
                    rooms[address], freeing[address] = soon, _Room(0, 0.0, 0)
                    reasons[job.id] = f"starts on {address} once the jobs stopped for it have ended"
                    served = True
                    break
        if served:
            continue
        best: tuple[tuple[float, ...], str, list[RunningJob]] | None = None
        for address, room in rooms.items():
            victims = _victims(job, room, by_worker.get(address, []), now, rules,
                               memory_counts[address])  # fmt: skip
            if victims is None:
                continue
            cost = (
                max(v.priority for v in victims),
                sum(_lost(v, now) * max(v.gpus, 1) for v in victims),
                len(victims),
            )
            if best is None or (cost, address) < (best[0], best[1]):
                best = (cost, address, victims)
        if best is None:
            continue
        _, address, victims = best
        for victim in victims:
            by_worker[address].remove(victim)
            rooms[address].add(victim)
        rooms[address].sub(job)
        ids = tuple(v.id for v in victims)
        preemptions.append(Preemption(job.id, address, ids))
        reasons[job.id] = (
            f"preempting {names_text(list(ids))} on {address}; it starts there once "
            f"{'it has' if len(ids) == 1 else 'they have'} stopped"
        )
    return preemptions, reasons


def _lost(job: RunningJob, now: float) -> float:
    """Seconds of work a preempted job would do again."""
    since = job.checkpointed if job.checkpointed is not None else job.started
    return max(0.0, now - since)


def _victims(
    job: QueuedJob,
    room: _Room,
    candidates: list[RunningJob],
    now: float,
    rules: PreemptionRules,
    memory_counts: bool,
) -> list[RunningJob] | None:
    """The fewest-cost running jobs of one worker whose stop makes room for ``job``."""
    eligible = sorted(
        (
            c
            for c in candidates
            if c.priority < job.priority and now - c.started >= rules.min_runtime
        ),
        key=lambda c: (c.priority, _lost(c, now), c.id),
    )
    trial = _Room(room.gpus, room.cpus, room.memory)
    chosen: list[RunningJob] = []
    for candidate in eligible:
        if trial.holds(job, memory_counts):
            break
        trial.add(candidate)
        chosen.append(candidate)
    if not chosen or not trial.holds(job, memory_counts):
        return None
    # Spare the ones the job does not need after all, most costly first.
    for candidate in reversed(list(chosen)):
        without = _Room(trial.gpus - candidate.gpus, trial.cpus - candidate.cpus,
                        trial.memory - candidate.memory)  # fmt: skip
        if without.holds(job, memory_counts):
            chosen.remove(candidate)
            trial = without
    return chosen
