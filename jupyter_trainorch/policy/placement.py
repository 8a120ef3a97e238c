"""Placement policy: which queued job starts on which worker, with which GPUs.

Pure and deterministic: no I/O, no clock, no Dask. The orchestrator calls
:func:`plan` on every scheduling event and a trace simulator replays the same
calls, so equal inputs must give equal outputs.

The rules, by precedence:

* Strict priority, FIFO within a priority: the queue is walked in
  :func:`queue_key` order.
* A job runs on one worker. A job needing ``n`` GPUs goes to a worker with at
  least ``n`` free GPU ids and gets the first ``n`` of them; it also needs the
  free CPUs, and the free memory when both it and the worker state a size.
* Best fit: among the workers a job fits on now, take the one with the fewest
  free GPUs, then the fewest free CPUs, then the lowest address, so whole free
  blocks stay available to multi-GPU jobs.
* Reservation: a job that fits some worker's capacity but no worker right now
  reserves the one with the most free GPUs (then the most free CPUs, then the
  lowest address), being the likeliest to free up first. No later job of the
  same call may start there, so a big job is not starved by a stream of small
  ones that keep taking the GPUs it waits for.
* Backfill: a job may start on a worker held for another only when it is sure
  to end before that job could start there anyway: its run time is known (its
  timeout, or what its earlier runs took, in ``runtimes``) and the held job's
  earliest start follows from the expected ends of what runs there (``running``).
  Without run times nothing backfills, and no job ever starts on a held worker.
* Jobs that were preempted (``resumes``) go first within their class.
* A job larger than every worker reserves nothing; :func:`fit_error` says why.
* A gang (``nodes`` > 1, see :mod:`.gang`) needs that many distinct workers, each
  fitting the per-node demand: all of them now, best fit per node, or it holds as many
  workers for itself. Gangs neither backfill nor preempt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import islice

from .backfill import BACKFILL_DEPTH, Releases, runtime_of
from .board import CPU_SLACK, Board
from .gang import gang_held_text, gang_shortfall, gang_waits_text, pick
from .host_gang import (
    hold_host,
    host_fit_error,
    host_waits_text,
    needs_host,
    place_on_host,
    pooling,
)
from .model import Placement, QueuedJob, RunningJob, WorkerView, queue_key
from .quota import GpuHoldings
from .wording import Shape, bytes_text, cpu_text, demand_text, names_text, plural

__all__ = [
    "Placement",
    "QueuedJob",
    "RunningJob",
    "WorkerView",
    "fit_error",
    "plan",
    "queue_key",
    "wait_reasons",
]

# Equal shapes are interchangeable for placement.
_Shape = Shape

# What is already known about a shape within one ``plan`` call. The board only
# ever loses free resources and candidate workers during a call, so a shape
# that failed stays failed for every later job of that shape.
_NO_FIT_NOW = 1
_HOPELESS = 2


def plan(
    queue: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    reasons: dict[str, str] | None = None,
    wanted: frozenset[str] | None = None,
    gpu_caps: Mapping[str, int] | None = None,
    gpus_held: Mapping[str, int] | None = None,
    *,
    group_caps: Mapping[str, int] | None = None,
    groups_held: Mapping[str, int] | None = None,
    now: float = 0.0,
    running: Sequence[RunningJob] = (),
    runtimes: Mapping[str, float] | None = None,
) -> list[Placement]:
    """Decide which queued jobs start now, where, and on which GPU ids.

    ``queue`` must already be in dispatch order (:func:`queue_key`, or fair
    share's); it is not re-sorted here. Jobs that cannot start are simply
    absent from the result; with ``reasons``, each of them (of ``wanted``
    only, past the point where the walk stops) gets the sentence why.
    ``gpu_caps``: GPUs a user's jobs may hold at once (a quota), against
    ``gpus_held`` now; ``group_caps`` and ``groups_held`` the same for the jobs of quota
    groups (``QueuedJob.groups``). A job past a cap waits and reserves nothing.
    ``runtimes``: the known run time (seconds) of queued jobs by id; with it, ``now`` and
    the ``running`` jobs' expected ends, jobs backfill (see the module's rules).
    """
    board = Board(workers)
    holdings = GpuHoldings(gpu_caps, gpus_held, group_caps, groups_held)
    held_for: dict[int, QueuedJob] = {}  # reserved worker -> the job it is held for
    releases = None
    if runtimes is not None:
        index_of = {address: index for index, address in enumerate(board.address)}
        releases = Releases(
            ((r.worker, r.ends, (r.gpus, r.cpus, r.memory)) for r in running), index_of
        )
    known: dict[_Shape, int] = {}
    # The smallest shapes found hopeless: anything at least as large in every
    # resource is hopeless too, which spares a scan per distinct shape.
    hopeless: list[_Shape] = []
    placements: list[Placement] = []
    last_cpu_free = -1  # index of the last job claiming no CPU, once needed

    def over_quota(job: QueuedJob, gpus: int) -> bool:
        breach = holdings.breach(job, gpus)
        if breach is not None and reasons is not None:
            who, cap, holds = breach
            reasons[job.id] = (
                f"{who} may hold {cap} GPUs at once (quota) and holds {holds}; "
                f"it needs {plural(gpus, 'GPU')}"
            )
        return breach is not None

    # Per shape, the shortest run time that found no room since the last new hold: held
    # workers only lose free resources in a call, so anything as long fails too.
    no_room: dict[_Shape, float] = {}

    def backfill(job: QueuedJob, shape: _Shape) -> bool:
        if releases is None:
            return False
        runtime = runtime_of(runtimes, job.id)
        if runtime is None or runtime >= no_room.get(shape, math.inf):
            return False
        until = now + runtime
        if until > releases.latest:
            return False
        room = [i for i, start in releases.start.items() if until <= start < math.inf]
        index = board.backfill_fit(room, *shape) if room else None
        if index is None:
            no_room[shape] = runtime
            return False
        taken = board.take_held(index, *shape)
        placements.append(Placement(job.id, board.address[index], taken, backfill=True))
        holdings.add(job, shape[0])
        return True

    def start(job: QueuedJob, index: int, shape: _Shape) -> tuple[str, ...]:
        taken = board.take(index, *shape)
        if releases is not None:
            runtime = runtime_of(runtimes, job.id)
            releases.add(index, math.inf if runtime is None else now + runtime, shape)
        return taken

    def hold(job: QueuedJob, index: int, shape: _Shape) -> None:
        if releases is not None:
            memory_counts = bool(board.cap_memory[index])
            releases.hold(index, shape, board.free(index), memory_counts, now, CPU_SLACK)
            no_room.clear()
        board.reserve(index)
        held_for[index] = job

    def gang(job: QueuedJob, nodes: int, shape: _Shape) -> None:
        chosen = pick(board.fits(*shape), nodes)
        if chosen is not None:
            slots = [(board.address[index], start(job, index, shape)) for index in chosen]
            placements.append(Placement(job.id, *slots[0], ranks=tuple(slots[1:])))
            holdings.add(job, shape[0] * nodes)
            return
        chosen = pick(board.reservables(*shape), nodes)
        if chosen is not None:
            for index in chosen:
                hold(job, index, shape)
            if releases is not None:
                releases.together(chosen)
        if reasons is not None:
            if chosen is not None:
                reasons[job.id] = gang_waits_text(
                    nodes, shape, sorted(board.address[i] for i in chosen)
                )
            else:
                ahead = sorted({other.id for other in held_for.values()})
                reasons[job.id] = fit_error(*shape, workers, nodes=nodes) or gang_held_text(
                    nodes, shape, ahead
                )

    def on_host(job: QueuedJob, shape: _Shape) -> None:
        placement = place_on_host(board, job.id, shape)
        if placement is not None:
            placements.append(placement)
            holdings.add(job, shape[0])
            return
        chosen = hold_host(board, shape)
        for index in chosen or ():
            board.reserve(index)  # not offered to backfill: the job has no single worker
            held_for[index] = job
        if reasons is not None:
            reasons[job.id] = (
                host_waits_text(shape, sorted(board.address[i] for i in chosen))
                if chosen
                else fit_error(*shape, workers) or _behind(position, board, held_for)
            )

    def elsewhere(job: QueuedJob, shape: _Shape) -> bool:
        """A job retried away from the workers it failed on: placed on another, or
        waiting for one; False when no other worker could ever hold it."""
        others = [i for i in range(len(board.address)) if board.address[i] not in job.avoid]
        if not any(board._holds(i, *shape) for i in others):
            return False
        index = next((i for i in board.fits(*shape) if board.address[i] not in job.avoid), None)
        if index is not None:
            placements.append(Placement(job.id, board.address[index], start(job, index, shape)))
            holdings.add(job, shape[0])
        elif reasons is not None:
            reasons[job.id] = (
                f"needs {demand_text(shape)} on a worker other than "
                f"{names_text(list(job.avoid))}, where it failed; none has that free now"
            )
        return True

    position = 0
    for position, job in enumerate(queue):
        if not board.unreserved:
            break
        if not board.open:
            # Only jobs claiming no CPU can still start anywhere.
            if last_cpu_free < 0:
                last_cpu_free = _last_cpu_free(queue, position)
            if position > last_cpu_free:
                break
        gpus = job.gpus if job.gpus > 0 else 0
        shape = (
            gpus,
            float(job.cpus) if job.cpus > 0 else 0.0,
            job.memory if job.memory > 0 else 0,
        )
        nodes = job.nodes if job.nodes > 1 else 1
        if holdings.capped and over_quota(job, gpus * nodes):
            continue
        if nodes > 1:
            gang(job, nodes, shape)
            continue
        if needs_host(gpus, board):
            on_host(job, shape)
            continue
        if job.avoid and elsewhere(job, shape):
            continue
        state = known.get(shape)
        if state is None and _covers(hopeless, shape):
            state = known[shape] = _HOPELESS
        if state is None:
            index = board.fit(*shape)
            if index is not None:
                placements.append(Placement(job.id, board.address[index], start(job, index, shape)))
                holdings.add(job, shape[0])
                continue
        if releases is not None and job.id in runtimes and backfill(job, shape):  # type: ignore[operator]
            continue
        if state == _HOPELESS:
            if reasons is not None:
                reasons[job.id] = _why_not(shape, workers, held_for)
            continue
        index = board.reservable(*shape)
        if index is None:
            # Larger than every worker, or every worker that could hold it is already held:
            # either way nothing of this shape (or larger) starts in this call.
            known[shape] = _HOPELESS
            hopeless = [h for h in hopeless if not _covers([shape], h)]
            hopeless.append(shape)
            if reasons is not None:
                reasons[job.id] = _why_not(shape, workers, held_for)
        else:
            known[shape] = _NO_FIT_NOW
            hold(job, index, shape)
            if reasons is not None:
                reasons[job.id] = (
                    f"needs {demand_text(shape)}, which no worker has free now; "
                    f"{board.address[index]} is held for it and it starts there next"
                )
    else:
        position = len(queue)
    started: set[str] = set()
    if releases is not None and position < len(queue) and releases.open_until(now):
        # Every worker is busy or held: the jobs just behind may still backfill.
        for job in islice(queue, position, position + BACKFILL_DEPTH):
            shape = _shape(job)
            if job.nodes <= 1 and not over_quota(job, shape[0]) and backfill(job, shape):
                started.add(job.id)
    if reasons is not None:
        for later, job in enumerate(queue[position:], start=position):
            if (wanted is None or job.id in wanted) and job.id not in started:
                if job.id not in reasons:
                    reasons[job.id] = fit_error(*_shape(job), workers, nodes=job.nodes) or _behind(
                        later, board, held_for
                    )
    return placements


def _shape(job: QueuedJob) -> _Shape:
    return (max(job.gpus, 0), max(float(job.cpus), 0.0), max(job.memory, 0))


def wait_reasons(
    queue: Sequence[QueuedJob],
    workers: Sequence[WorkerView],
    job_ids: Sequence[str] | None = None,
    gpu_caps: Mapping[str, int] | None = None,
    gpus_held: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Why each queued job (of ``job_ids``) that would not start now waits: one sentence,
    from the same walk as :func:`plan` (it does not start anything)."""
    wanted = frozenset(job_ids) if job_ids is not None else None
    reasons: dict[str, str] = {}
    plan(queue, workers, reasons, wanted, gpu_caps, gpus_held)
    return {k: v for k, v in reasons.items() if wanted is None or k in wanted}


def _why_not(shape: _Shape, workers: Sequence[WorkerView], held_for: dict[int, QueuedJob]) -> str:
    return fit_error(*shape, workers) or _held_elsewhere(shape, held_for)


def _held_elsewhere(shape: _Shape, held_for: dict[int, QueuedJob]) -> str:
    ahead = sorted({job.id for job in held_for.values()})
    if ahead:
        names = names_text(ahead)
        return (
            f"needs {demand_text(shape)}; the workers that could hold it are busy or "
            f"held for jobs ahead of it ({names})"
        )
    return f"needs {demand_text(shape)}, which no worker has free now"


def _behind(position: int, board: Board, held_for: dict[int, QueuedJob]) -> str:
    if board.unreserved:
        why = "no worker has a free CPU (running jobs hold them all)"
    else:
        holds = [f"{board.address[i]} for {job.id}" for i, job in sorted(held_for.items())]
        shown = ", ".join(holds[:3]) + (", …" if len(holds) > 3 else "")
        why = f"every worker is busy or held ({shown})" if holds else "every worker is busy"
    if position == 0:
        return why
    ahead = plural(position, "job") + (" that goes first" if position == 1 else " that go first")
    return f"behind {ahead}; {why}"


def _covers(smaller: list[_Shape], shape: _Shape) -> bool:
    gpus, cpus, memory = shape
    return any(gpus >= g and cpus >= c and memory >= m for g, c, m in smaller)


def _last_cpu_free(queue: Sequence[QueuedJob], start: int) -> int:
    for position in range(len(queue) - 1, start - 1, -1):
        if queue[position].cpus <= CPU_SLACK:
            return position
    return start - 1


def fit_error(
    gpus: int, cpus: float, memory: int, workers: Sequence[WorkerView], nodes: int = 1
) -> str | None:
    """None if some worker could ever hold the job (``nodes`` distinct workers for a gang,
    each holding one node's demand), else one sentence why not.

    Judged on capacity, not on what is free now: a job that only has to wait
    is not an error.
    """
    if not workers:
        return "the cluster has no workers yet"
    board = Board(workers)
    count = len(workers)
    if nodes <= 1:
        if any(board._holds(index, gpus, cpus, memory) for index in range(count)):
            return None
    else:
        holders = sum(board._holds(index, gpus, cpus, memory) for index in range(count))
        if holders >= nodes:
            return None
        if holders:
            return gang_shortfall(nodes, (gpus, cpus, memory), holders, count)
    total_gpus = sum(board.cap_gpus)
    cluster = f"cluster: {plural(count, 'worker')}, {plural(total_gpus, 'GPU')} in all"
    one_worker = "a job must fit on one worker"
    largest_gpus = max(board.cap_gpus)
    if nodes <= 1 and gpus > largest_gpus and largest_gpus and pooling(workers):
        return host_fit_error((gpus, cpus, memory), workers)
    if gpus > largest_gpus:
        if not total_gpus:
            return f"the job asks for {plural(gpus, 'GPU')} but the cluster has no GPUs ({cluster})"
        return (
            f"the job asks for {plural(gpus, 'GPU')} but the largest worker has "
            f"{largest_gpus} ({cluster}); {one_worker}"
        )
    largest_cpus = max(board.cap_cpus)
    if cpus > largest_cpus + CPU_SLACK:
        return f"the job asks for {cpu_text(cpus)} but the largest worker has {largest_cpus:g}"
    if memory and all(board.cap_memory):
        largest_memory = max(board.cap_memory)
        if memory > largest_memory:
            return (
                f"the job asks for {bytes_text(memory)} of memory but the largest worker "
                f"has {bytes_text(largest_memory)}"
            )
    # Each resource exists somewhere, only not all of them on one worker.
    return (
        f"the job asks for {demand_text((gpus, cpus, memory))} but no single worker has all "
        f"of that ({cluster}); {one_worker}"
    )
