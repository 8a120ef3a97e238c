"""Replays a job trace on a virtual clock through the very placement the orchestrator runs.

Pure: trace rows and a cluster shape in, per-job start/end times and summary figures out.
Each moment something happens (jobs arrive, jobs end) the queue and the free resources go
to :func:`~.placement.plan`, exactly as the scheduling loop hands them over, and the jobs it
places start then. Policies:

* ``priority`` — the default: strict priority classes, FIFO inside a class, best fit and
  reservation (what ``trainorch serve`` does).
* ``fair`` — ``priority`` with fair share inside each class (:mod:`.fairshare`): users take
  turns, weighted by their GPU use over the last ``half_life`` seconds.
* ``fifo`` — the baseline a shared queue without priorities gives: every job in the same
  class, so submission order alone decides; no backfill, no preemption.

``priority`` and ``fair`` backfill jobs whose trace gives a ``timeout`` and, given
``PreemptionRules``, let urgent jobs preempt (:func:`~.decide.decide`, as the service).
Traces have no node counts: every replayed job runs on one worker (no gangs).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from .decide import decide
from .fairshare import FairQueue
from .placement import Placement, QueuedJob, RunningJob, WorkerView, queue_key
from .preemption import PreemptionRules

POLICIES = ("fair", "priority", "fifo")
DEFAULT_HALF_LIFE = 4 * 3600.0
_FIFO_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class TraceJob:
    job_id: str
    gpus: int
    submit: float  # seconds from the trace's start
    duration: float  # seconds it runs once started
    priority: int = 100
    user: str = ""
    timeout: float | None = None  # the run-time bound the scheduler knows (backfill)


@dataclass(slots=True)
class Outcome:
    job: TraceJob
    start: float = math.nan
    end: float = math.nan
    preempted: int = 0  # times it was stopped for an urgent job

    @property
    def wait(self) -> float:
        return self.start - self.job.submit

    @property
    def completion(self) -> float:
        return self.end - self.job.submit


@dataclass(slots=True)
class Simulation:
    outcomes: list[Outcome]
    gpus: int
    decisions: int = 0  # moments something happened (jobs arrived or ended)
    inversions: int = 0  # a lower-priority job started while a higher one that fitted waited
    backfilled: int = 0  # starts on a worker held for a job ahead, proven not to delay it
    preemptions: int = 0  # running jobs stopped for an urgent one
    lost_gpu_seconds: float = 0.0  # work preempted jobs did again (since their last checkpoint)
    busy: list[tuple[float, int, int]] = field(default_factory=list)  # (time, GPUs busy, queued)


@dataclass(slots=True)
class _Run:
    index: int
    worker: str
    gpu_ids: tuple[str, ...]
    start: float
    end: float
    token: int
    view: RunningJob | None = None  # what the policy was last shown of it


def simulate(
    trace: Sequence[TraceJob],
    workers: int,
    gpus_per_worker: int,
    policy: str = "fair",
    half_life: float = DEFAULT_HALF_LIFE,
    preemption: PreemptionRules | None = None,
    checkpoint_every: float = 0.0,
) -> Simulation:
    """Run ``trace`` on ``workers`` identical workers of ``gpus_per_worker`` GPUs each.

    ``preemption``: the rules by which urgent jobs stop running ones (not under ``fifo``);
    a preempted job resumes from its last checkpoint, taken every ``checkpoint_every``
    seconds of its run (0: it starts over). Jobs with a ``timeout`` may backfill.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if policy == "fifo":
        preemption = None
    ids = tuple(str(n) for n in range(gpus_per_worker))
    # CPUs are not what a GPU trace is about: each worker has as many as the queue can use.
    views = {
        f"w{n:04d}": WorkerView(f"w{n:04d}", ids, ids, cpus=float(len(trace) or 1),
                                free_cpus=float(len(trace) or 1))
        for n in range(workers)
    }  # fmt: skip
    arrivals = sorted(range(len(trace)), key=lambda i: (trace[i].submit, i))
    outcomes = [Outcome(job) for job in trace]
    left = [job.duration for job in trace]  # run time still to do
    queue = _Queue(
        fair=policy == "fair",
        preempting=preemption.priority if preemption else None,
        trace_priority={str(i): job.priority for i, job in enumerate(trace)},
    )
    runs: dict[int, _Run] = {}
    ends: list[tuple[float, int, int]] = []  # (end, index, token): stale once preempted
    tokens = itertools.count()
    runtimes: dict[str, float] = {}  # queued jobs with a timeout: what backfill may use
    wakes: list[float] = []  # when a running job becomes old enough to be preempted
    result = Simulation(outcomes, workers * gpus_per_worker)
    busy = 0
    next_arrival = 0
    usage = _Usage(half_life)

    def start(placement: Placement, now: float) -> None:
        nonlocal busy
        index = int(placement.job_id)
        outcome = outcomes[index]
        if math.isnan(outcome.start):
            outcome.start = now
        run = _Run(index, placement.worker, placement.gpu_ids, now, now + left[index], next(tokens))
        runs[index] = run
        views[placement.worker] = _take(views[placement.worker], placement.gpu_ids)
        heapq.heappush(ends, (run.end, index, run.token))
        busy += len(placement.gpu_ids)
        usage.hold(outcome.job.user, len(placement.gpu_ids))
        runtimes.pop(placement.job_id, None)

    def stop(index: int) -> _Run:
        nonlocal busy
        run = runs.pop(index)
        views[run.worker] = _give_back(views[run.worker], run.gpu_ids)
        busy -= len(run.gpu_ids)
        usage.hold(trace[index].user, -len(run.gpu_ids))
        return run

    def enqueue(index: int, resumes: bool = False) -> None:
        queue.add(_queued(trace[index], index, policy, resumes))
        if trace[index].timeout is not None and policy != "fifo":
            runtimes[str(index)] = trace[index].timeout

    while next_arrival < len(arrivals) or ends:
        now = min(
            trace[arrivals[next_arrival]].submit if next_arrival < len(arrivals) else math.inf,
            ends[0][0] if ends else math.inf,
            wakes[0] if wakes else math.inf,
        )
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
        usage.advance(now)
        while ends and ends[0][0] <= now:
            _, index, token = heapq.heappop(ends)
            if index in runs and runs[index].token == token:
                outcomes[index].end = runs[index].end
                stop(index)
        while next_arrival < len(arrivals) and trace[arrivals[next_arrival]].submit <= now:
            index = arrivals[next_arrival]
            next_arrival += 1
            if trace[index].gpus > gpus_per_worker:
                continue  # refused at submit, as the service refuses it (policy.fit_error)
            enqueue(index)
        result.decisions += 1
        # Two rounds at most: victims stop at once on a virtual clock, and what they free
        # goes to the jobs they were stopped for in the same moment.
        for _ in range(2):
            # With every GPU taken nothing of a GPU trace can start, unless by preemption.
            if busy >= result.gpus and not queue.urgent:
                break
            decision = decide(
                queue.ordered(usage.used), list(views.values()), now=now,
                running=[_running(trace[r.index], r, now, checkpoint_every) for r in runs.values()]
                if (runtimes or queue.urgent) else (),
                runtimes=runtimes or None, rules=preemption if queue.urgent else None,
            )  # fmt: skip
            placements = decision.placements
            if placements:
                for placement in placements:
                    start(placement, now)
                queue.discard([queue.get(p.job_id) for p in placements])
                result.backfilled += sum(1 for p in placements if p.backfill)
                result.inversions += _inversions(
                    queue.smallest_gpus(), views,
                    [p for p in placements if not p.backfill], trace,
                )  # fmt: skip
            if not decision.preemptions:
                break
            for preemption_ in decision.preemptions:
                for victim in preemption_.victims:
                    run = stop(int(victim))
                    kept = _checkpointed(run.start, now, checkpoint_every) - run.start
                    result.preemptions += 1
                    result.lost_gpu_seconds += (now - run.start - kept) * len(run.gpu_ids)
                    left[run.index] -= kept
                    outcomes[run.index].preempted += 1
                    enqueue(run.index, resumes=True)
        if queue.urgent and preemption is not None:
            # The service decides again when a running job reaches the minimum run time.
            ripe = [r.start + preemption.min_runtime for r in runs.values()]
            later = min((t for t in ripe if t > now), default=None)
            if later is not None and (not wakes or later < wakes[0]):
                heapq.heappush(wakes, later)
        result.busy.append((now, busy, len(queue)))
        if not ends and len(queue) and next_arrival >= len(arrivals):
            break  # what is left can never start (larger than every worker)
    return result


def _checkpointed(started: float, now: float, every: float) -> float:
    """When a job running since ``started`` last saved a checkpoint (``started``: never)."""
    if every <= 0 or now - started < every:
        return started
    return started + math.floor((now - started) / every) * every


def _running(job: TraceJob, run: _Run, now: float, every: float) -> RunningJob:
    saved = _checkpointed(run.start, now, every)
    checkpointed = saved if saved > run.start else None
    if run.view is None or run.view.checkpointed != checkpointed:
        run.view = RunningJob(
            str(run.index), run.worker, job.priority, gpus=len(run.gpu_ids), cpus=0.0,
            user=job.user, started=run.start, checkpointed=checkpointed,
            ends=run.start + job.timeout if job.timeout is not None else None,
        )  # fmt: skip
    return run.view


class _Queue:
    """The waiting jobs: in queue_key order (what the orchestrator keeps), or by class and
    user for fair share, read in fair order lazily (:class:`.fairshare.FairQueue`).
    ``urgent``: how many of them may preempt."""

    def __init__(self, fair: bool, preempting: int | None, trace_priority: dict[str, int]) -> None:
        self.preempting = preempting
        self.trace_priority = trace_priority
        # Per trace priority: how many waiting jobs need each GPU count.
        self.sizes: dict[int, dict[int, int]] = {}
        self.urgent = 0
        self.fair = FairQueue() if fair else None
        self.jobs: list[QueuedJob] = []
        self.keys: list[tuple[int, int, int]] = []
        self.by_id: dict[str, QueuedJob] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, job_id: str) -> QueuedJob:
        return self.by_id[job_id]

    def add(self, job: QueuedJob) -> None:
        self.by_id[job.id] = job
        self._count(job, 1)
        if self.preempting is not None and job.priority >= self.preempting:
            self.urgent += 1
        if self.fair is not None:
            self.fair.add(job)
            return
        at = bisect.bisect(self.keys, queue_key(job))
        self.keys.insert(at, queue_key(job))
        self.jobs.insert(at, job)

    def discard(self, started: list[QueuedJob]) -> None:
        for job in started:
            del self.by_id[job.id]
            self._count(job, -1)
            if self.preempting is not None and job.priority >= self.preempting:
                self.urgent -= 1
        if self.fair is not None:
            self.fair.discard(started)
            return
        gone = {job.id for job in started}
        kept = [i for i, job in enumerate(self.jobs) if job.id not in gone]
        self.jobs, self.keys = [self.jobs[i] for i in kept], [self.keys[i] for i in kept]

    def ordered(self, usage: dict[str, float]) -> Sequence[QueuedJob]:
        return self.fair.ordered(usage) if self.fair is not None else self.jobs

    def smallest_gpus(self) -> dict[int, int]:
        """Per trace priority (fifo flattens the queue's), the fewest GPUs a waiting job needs."""
        return {
            priority: min(gpus for gpus, count in sizes.items() if count)
            for priority, sizes in self.sizes.items()
            if any(sizes.values())
        }

    def _count(self, job: QueuedJob, change: int) -> None:
        sizes = self.sizes.setdefault(self.trace_priority[job.id], {})
        sizes[job.gpus] = sizes.get(job.gpus, 0) + change


class _Usage:
    """Decayed GPU-seconds per user, kept up as the clock moves (the closed form of
    :func:`.fairshare.decayed_usage` for GPUs held at a constant count between events)."""

    def __init__(self, half_life: float) -> None:
        self.rate = math.log(2) / half_life
        self.used: dict[str, float] = {}
        self.held: dict[str, int] = {}
        self.clock = 0.0

    def advance(self, now: float) -> None:
        elapsed = now - self.clock
        if elapsed <= 0:
            return
        keep = math.exp(-self.rate * elapsed)
        gained = (1 - keep) / self.rate
        for user in self.used.keys() | self.held.keys():
            self.used[user] = self.used.get(user, 0.0) * keep + self.held.get(user, 0) * gained
        self.clock = now

    def hold(self, user: str, gpus: int) -> None:
        self.held[user] = self.held.get(user, 0) + gpus


def _queued(job: TraceJob, index: int, policy: str, resumes: bool = False) -> QueuedJob:
    priority = _FIFO_PRIORITY if policy == "fifo" else job.priority
    # A trace's GPU jobs claim no CPU, so that GPUs alone decide, as the trace means.
    return QueuedJob(
        str(index), priority, index, gpus=job.gpus, cpus=0.0, user=job.user, resumes=resumes
    )


def _take(view: WorkerView, gpu_ids: tuple[str, ...]) -> WorkerView:
    return replace(view, free_gpu_ids=tuple(g for g in view.free_gpu_ids if g not in gpu_ids))


def _give_back(view: WorkerView, gpu_ids: tuple[str, ...]) -> WorkerView:
    freed = set(view.free_gpu_ids) | set(gpu_ids)
    return replace(view, free_gpu_ids=tuple(g for g in view.gpu_ids if g in freed))


def _inversions(
    smallest: dict[int, int],
    views: dict[str, WorkerView],
    placements: Sequence[Placement],
    trace: Sequence[TraceJob],
) -> int:
    """Jobs just started where a waiting job of a higher (trace) priority would have fitted
    had they not: each took a place that a job which goes first could have had.
    ``smallest``: per trace priority, the fewest GPUs a waiting job of it needs."""
    count = 0
    for placement in placements:
        started = trace[int(placement.job_id)]
        room = len(views[placement.worker].free_gpu_ids) + len(placement.gpu_ids)
        if any(p > started.priority and g <= room for p, g in smallest.items()):
            count += 1
    return count


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile (``percent`` from 0 to 100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(result: Simulation, classes: dict[int, str] | None = None) -> dict[str, object]:
    """The figures of a run: JCT and queueing delay (mean, p95) overall, per priority class
    and per user; GPU utilisation over the makespan; preemptions; priority inversions."""
    done = [o for o in result.outcomes if not math.isnan(o.end)]
    never = len(result.outcomes) - len(done)
    first = min((o.job.submit for o in result.outcomes), default=0.0)
    last = max((o.end for o in done), default=first)
    makespan = last - first
    gpu_seconds = sum(o.job.gpus * o.job.duration for o in done)
    names = classes or {}

    def figures(outcomes: Iterable[Outcome]) -> dict[str, float]:
        waits = [o.wait for o in outcomes]
        jcts = [o.completion for o in outcomes if not math.isnan(o.end)]
        return {
            "jobs": len(waits),
            "wait_mean": sum(waits) / len(waits) if waits else math.nan,
            "wait_p95": percentile(waits, 95),
            "jct_mean": sum(jcts) / len(jcts) if jcts else math.nan,
            "jct_p95": percentile(jcts, 95),
        }

    by_class: dict[int, list[Outcome]] = {}
    by_user: dict[str, list[Outcome]] = {}
    for outcome in done:
        by_class.setdefault(outcome.job.priority, []).append(outcome)
        by_user.setdefault(outcome.job.user or "-", []).append(outcome)
    return {
        **figures(done),
        "jobs": len(result.outcomes),
        "never_started": never,
        "makespan": makespan,
        "gpu_utilisation": gpu_seconds / (result.gpus * makespan) if makespan > 0 else 0.0,
        "preemptions": result.preemptions,
        "lost_gpu_hours": result.lost_gpu_seconds / 3600,
        "backfilled": result.backfilled,
        "priority_inversions": result.inversions,
        "decisions": result.decisions,
        # Highest class first, named where the class has a name.
        "per_class": {
            names.get(priority, str(priority)): figures(by_class[priority])
            for priority in sorted(by_class, reverse=True)
        },
        "per_user": {k: figures(v) for k, v in sorted(by_user.items())},
    }
