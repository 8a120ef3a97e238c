"""The thread that records jobs in MLflow, and when it steps aside for jobs starting.

Recording (a job's run, naming an attempt's run, artifacts, metrics, closing runs) costs
tens of milliseconds of CPU per job against a SQLite store. None of it has to happen
before a job starts, so it runs on one thread that yields while attempts are being
started on a machine whose CPUs are busy: a burst of job starts is not slowed by the
tracking of the jobs before it, which catches up once the burst is over.

Three priorities: URGENT (a run that a job's process waits for) goes before SOON (a run
for an attempt started without one; naming an attempt's run), which goes before LATER (runs
made ahead, artifacts, metrics, closing runs, clean-up); within a priority, tasks run in the
order they came, so a run is always named before it is closed and an attempt's run is closed
before its job's. An URGENT task cuts a pause short: only the others yield.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

URGENT = 0
SOON = 1
LATER = 2
_STOP = 3  # after everything else: the lane ends once it has done all it was given

# While jobs start on busy CPUs, the lanes of the tracking process together take at most
# this share of one core...
SHARE_WHILE_STARTING = 0.1
# ...and never pauses longer than this after a task, so it keeps moving under any load.
LONGEST_PAUSE = 1.0
BUSY_CPU_PERCENT = 80.0
CPU_SAMPLE_EVERY = 0.25


class CpuLoad:
    """Whether the machine's CPUs are nearly all busy, sampled at most every quarter second.
    Thread-safe: each reading resets psutil's reference point, so one thread reads at a time."""

    def __init__(self) -> None:
        self._sampled = 0.0
        self._busy = False
        self._lock = threading.Lock()
        try:
            import psutil

            self._percent: Callable[[], float] | None = lambda: psutil.cpu_percent(None)
            self._percent()  # the first reading only sets the reference point
        except Exception:  # noqa: BLE001 - without a reading, recording never yields
            self._percent = None

    def busy(self) -> bool:
        if self._percent is None:
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._sampled >= CPU_SAMPLE_EVERY:
                self._sampled, self._busy = now, self._percent() >= BUSY_CPU_PERCENT
            return self._busy


class RecordLane:
    """One thread running tasks by priority; ``should_yield()`` is asked after each one."""

    def __init__(
        self,
        should_yield: Callable[[], bool],
        name: str = "trainorch-mlflow",
        share: float = SHARE_WHILE_STARTING,
    ) -> None:
        """``share``: of one core, this lane's part of ``SHARE_WHILE_STARTING``."""
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._share = share
        self._order = itertools.count()
        self._should_yield = should_yield
        self._urgent_came = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, priority: int, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((priority, next(self._order), (future, fn, args, kwargs)))
        if priority == URGENT:
            self._urgent_came.set()
        return future

    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Finish every task given so far, then end the thread."""
        self._queue.put((_STOP, next(self._order), None))
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(err)
            took = time.perf_counter() - started
            if self._should_yield():
                self._pause(min(LONGEST_PAUSE, took * (1 / self._share - 1)))

    def _pause(self, seconds: float) -> None:
        """Sleep, unless an URGENT task waits or comes meanwhile."""
        self._urgent_came.clear()
        with self._queue.mutex:
            urgent_waits = bool(self._queue.queue) and self._queue.queue[0][0] == URGENT
        if not urgent_waits:
            self._urgent_came.wait(seconds)
