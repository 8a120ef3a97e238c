"""Workers that fail job after job are left out of placement for a cool-down.

A bad GPU or a broken driver fails every job sent to that worker; retries keep landing
there. When ``limit`` different jobs fail on one worker within ``window`` seconds with no
success in between, the worker takes no new job for ``cooldown`` seconds (jobs running
there go on). The last workers are never all excluded: a fault in the jobs themselves must
not stop the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..policy.wording import names_text, plural

COUNTED_CAUSES = frozenset({"job", "out_of_memory", "infrastructure"})


class WorkerHealth:
    def __init__(
        self,
        limit: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float],
        on_excluded: Callable[[str, str], None],
    ) -> None:
        self.limit = limit
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        self.on_excluded = on_excluded
        self._failures: dict[str, list[tuple[float, str]]] = {}  # worker -> (when, job)
        self._excluded: dict[str, float] = {}  # worker -> until

    def attempt_ended(self, worker: str, job_id: str, cause: str | None, workers: int) -> None:
        """An attempt on ``worker`` ended (``cause`` None: it succeeded); ``workers``: how
        many the cluster has."""
        if not self.limit or not worker:
            return
        if cause is None:
            self._failures.pop(worker, None)
            return
        if cause not in COUNTED_CAUSES:
            return
        now = self.clock()
        recent = [(t, j) for t, j in self._failures.get(worker, []) if now - t < self.window]
        recent.append((now, job_id))
        self._failures[worker] = recent
        jobs = sorted({j for _, j in recent})
        if len(jobs) < self.limit or worker in self.excluded():
            return
        if len(self.excluded()) + 1 >= workers:
            return
        self._excluded[worker] = now + self.cooldown
        self._failures.pop(worker, None)
        self.on_excluded(
            worker,
            f"worker {worker} takes no new job for {self.cooldown / 60:g} min: "
            f"{plural(len(jobs), 'job')} failed on it ({names_text(jobs)})",
        )

    def excluded(self) -> dict[str, float]:
        """Excluded workers and until when."""
        now = self.clock()
        for worker in [w for w, until in self._excluded.items() if until <= now]:
            del self._excluded[worker]
        return dict(self._excluded)

    def next_return(self) -> float | None:
        """When the next excluded worker takes jobs again."""
        return min(self.excluded().values(), default=None)

    def summary(self, worker: str) -> dict[str, Any]:
        return {"excluded_until": self._excluded.get(worker)}
