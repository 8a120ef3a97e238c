"""Expected start and end times of jobs, beside the queue's wait reasons.

Run times come from history: the median of the latest succeeded jobs of the same user and
name (a sweep's jobs, a notebook's reruns). A running job without such a history, that
reports its progress, is expected to end when its fraction done says. The start times are
:func:`policy.forecast.estimate_starts` over those figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..policy import QueuedJob, WorkerView
from ..policy.forecast import Holding, estimate_starts
from ..store import JobRecord, JobStore
from .attempts import Running

# A forecast is a replay of the whole queue: one per few seconds serves every poll of
# every panel; run times move slower than that.
TTL_S = 3.0
# Progress is read as the fraction of the job done only once it says something.
MIN_FRACTION = 0.02


class Forecast(NamedTuple):
    starts: dict[str, float]  # queued job -> expected start
    ends: dict[str, float]  # running job -> expected end


class StartForecast:
    def __init__(self, store: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._made = -TTL_S
        self._forecast = Forecast({}, {})

    def current(
        self,
        queue: Sequence[QueuedJob],
        views: Callable[[], list[WorkerView]],
        held: Sequence[Running],
    ) -> Forecast:
        """Expected starts of queued jobs and ends of running ones (epoch seconds), of those
        that can be told; made anew at most every ``TTL_S``."""
        now = self.clock()
        if now - self._made < TTL_S:
            return self._forecast
        records = {
            job_id: record
            for job_id, (record, _) in self.store.get_jobs([r.job_id for r in held]).items()
        }
        keys = {(job.user, job.name) for job in queue}
        keys.update((record.user, record.name) for record in records.values())
        history = {
            key: statistics.median(runs) for key, runs in self.store.recent_runtimes(keys).items()
        }
        ends: dict[str, float] = {}
        holdings = []
        for run in held:
            record = records.get(run.job_id)
            end = _expected_end(record, history, now) if record is not None else None
            if end is not None:
                ends[run.job_id] = end
            holdings.extend(
                Holding(worker, gpu_ids, run.cpus, run.memory, end)
                for worker, gpu_ids in run.slots()
            )
        runtimes = {
            job.id: history[(job.user, job.name)]
            for job in queue
            if (job.user, job.name) in history
        }
        self._forecast = Forecast(estimate_starts(queue, views(), holdings, runtimes, now), ends)
        self._made = now
        return self._forecast


def _expected_end(
    record: JobRecord, history: dict[tuple[str, str], float], now: float
) -> float | None:
    attempt = record.attempts[-1] if record.attempts else None
    started = (attempt.started if attempt is not None else None) or record.started
    if started is None:
        return None
    typical = history.get((record.user, record.name))
    if typical is not None:
        # An attempt past its usual time is expected to end soon, never in the past.
        return max(now + 1.0, started + typical)
    fraction = record.progress.get("fraction") if isinstance(record.progress, dict) else None
    if isinstance(fraction, (int, float)) and MIN_FRACTION <= fraction < 1:
        return now + (now - started) * (1 - fraction) / fraction
    return None
