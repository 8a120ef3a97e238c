"""MLflow runs made ahead of the attempts that will log into them.

An attempt's run must exist before its process starts, or the process waits for it:
creating one costs 7-10 ms of CPU on a SQLite store, and seconds when it queues behind
other MLflow work. So a few runs per experiment are made in advance and one is taken
when an attempt is dispatched: its id travels in the attempt's request, and the run is
named and tagged as that attempt's afterwards (``MlflowTracker.name_attempt``).

How many are kept follows demand: ``MIN_RESERVED`` while an experiment is in use, plus
one for each submit or start of its jobs in the last ``DEMAND_WINDOW`` seconds. A run's
start time is when it was made, so none is handed out older than ``MAX_AGE``: it is
discarded (deleted) and replaced instead. An experiment unused for ``IN_USE_FOR`` keeps
none.

The ledger file lists the reserved runs not yet handed out, so that runs a crashed
service left behind are deleted by the next one (a run taken since is named by then,
and ``discard_reserved`` leaves it alone).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..files import write_private

MIN_RESERVED = 2
MAX_RESERVED = 32
DEMAND_WINDOW = 5.0
MAX_AGE = 30.0
IN_USE_FOR = 600.0


@dataclass
class Reserved:
    run_id: str
    experiment_id: str
    made: float  # on the pool's clock


class RunPool:
    """Reserved runs by experiment name. Thread-safe: taken from on the orchestrator's
    loop, filled as the tracking process reports runs made (``hooks``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, deque[Reserved]] = {}
        self._demand: dict[str, deque[float]] = {}  # times of recent submits and takes
        self._last_use: dict[str, float] = {}
        self._expired: list[str] = []
        self.last_take = -math.inf

    def note_demand(self, experiment: str) -> None:
        """A job of ``experiment`` was submitted (or one of its attempts taken a run)."""
        now = self.clock()
        with self._lock:
            self._demand.setdefault(experiment, deque()).append(now)
            self._last_use[experiment] = now

    def take(self, experiment: str) -> Reserved | None:
        """The oldest reserved run of ``experiment`` that is young enough, if any."""
        self.note_demand(experiment)
        now = self.clock()
        with self._lock:
            runs = self._runs.get(experiment) or deque()
            while runs:
                reserved = runs.popleft()
                if now - reserved.made <= MAX_AGE:
                    self.last_take = now
                    return reserved
                self._expired.append(reserved.run_id)
        return None

    def add(self, experiment: str, run_id: str, experiment_id: str) -> None:
        reserved = Reserved(run_id, experiment_id, self.clock())
        with self._lock:
            self._runs.setdefault(experiment, deque()).append(reserved)

    def wanted(self, experiment: str) -> int:
        """How many more runs ``experiment`` should have reserved (0 when enough)."""
        now = self.clock()
        with self._lock:
            if now - self._last_use.get(experiment, -math.inf) > IN_USE_FOR:
                return 0
            recent = self._demand.get(experiment, deque())
            while recent and now - recent[0] > DEMAND_WINDOW:
                recent.popleft()
            target = min(MAX_RESERVED, MIN_RESERVED + len(recent))
            fresh = sum(now - r.made <= MAX_AGE for r in self._runs.get(experiment, ()))
            return max(0, target - fresh)

    def expired(self) -> list[str]:
        """Runs too old to hand out, and runs of experiments no longer in use: taken out
        of the pool, to be deleted."""
        now = self.clock()
        with self._lock:
            gone, self._expired = self._expired, []
            for experiment, runs in self._runs.items():
                in_use = now - self._last_use.get(experiment, -math.inf) <= IN_USE_FOR
                kept = deque(r for r in runs if in_use and now - r.made <= MAX_AGE)
                gone.extend(r.run_id for r in runs if r not in kept)
                self._runs[experiment] = kept
        return gone

    def experiments(self) -> list[str]:
        """The experiments that hold reserved runs or are in use."""
        now = self.clock()
        with self._lock:
            used = {e for e, t in self._last_use.items() if now - t <= IN_USE_FOR}
            return sorted(used | {e for e, runs in self._runs.items() if runs})

    def run_ids(self) -> list[str]:
        """Every run reserved and not handed out (expired ones not yet deleted too)."""
        with self._lock:
            return self._all_run_ids()

    def drain(self) -> list[str]:
        """Every run still reserved, taken out (the service stops)."""
        with self._lock:
            gone = self._all_run_ids()
            self._runs.clear()
            self._expired = []
        return gone

    def _all_run_ids(self) -> list[str]:
        return [r.run_id for runs in self._runs.values() for r in runs] + self._expired


class Ledger:
    """The file that lists the reserved runs of one tracking store not yet handed out."""

    def __init__(self, path: Path | None, tracking_uri: str) -> None:
        self.path = path
        self.tracking_uri = tracking_uri
        self._lock = threading.Lock()  # one writer at a time: they share a staging file

    def write(self, run_ids: list[str]) -> None:
        if self.path is None:
            return
        text = json.dumps({"tracking_uri": self.tracking_uri, "reserved": run_ids})
        with self._lock:
            write_private(self.path, text)

    def read(self) -> list[str]:
        """What an earlier service left listed for this tracking store."""
        if self.path is None:
            return []
        try:
            found = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(found, dict) or found.get("tracking_uri") != self.tracking_uri:
            return []
        return [str(run_id) for run_id in found.get("reserved") or []]
