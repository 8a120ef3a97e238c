"""What the cluster is doing, for the API, the panel and the metrics: workers with what
their hosts and GPUs use, GPUs busy and idle, the queue by priority, GPU time left idle
while jobs waited, and autoscaling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..cluster import ClusterBackend
from ..spec import priority_name
from ..store import iso
from .attempts import AttemptTracker
from .autoscale import Autoscaler
from .queue import JobQueue
from .scheduler import Scheduler


class ClusterView:
    def __init__(
        self,
        backend: ClusterBackend,
        scheduler: Scheduler,
        attempts: AttemptTracker,
        queue: JobQueue,
        autoscaler: Autoscaler | None,
        clock: Callable[[], float],
        excluded: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.attempts = attempts
        self.queue = queue
        self.autoscaler = autoscaler
        self.clock = clock
        self.excluded = excluded
        self.usage: dict[str, dict[str, Any]] = {}
        self.idle_gpu_seconds = 0.0
        self._idle_now: tuple[float, int] | None = None  # since when, how many GPUs

    def sample_idle(self) -> None:
        """After each scheduling round and every few seconds: GPUs free while jobs wanting
        GPUs wait add to the idle GPU time (a gap left by the schedule, or a worker too
        small for the jobs that wait)."""
        now = self.clock()
        if self._idle_now is not None:
            since, gpus = self._idle_now
            self.idle_gpu_seconds += gpus * max(0.0, now - since)
        wanted = sum(job.gpus * max(1, job.nodes) for job in self.scheduler.waiting_for_capacity())
        free = sum(len(view.free_gpu_ids) for view in self.scheduler.views()) if wanted else 0
        self._idle_now = (now, min(free, wanted))

    async def refresh_usage(self) -> None:
        readings = await self.backend.read_usage()
        self.usage = {addr: r for addr, r in readings.items() if isinstance(r, dict)}

    def _usage(self, address: str) -> dict[str, Any] | None:
        reading = self.usage.get(address)
        if reading is None:
            return None
        return {**reading, "time": iso(reading["time"])}

    def status(self, draining: bool, recovery: dict[str, int] | None) -> dict[str, Any]:
        self.sample_idle()
        views = self.scheduler.views()
        running = self.attempts.held()
        gpus_total = sum(len(v.gpu_ids) for v in views)
        gpus_free = sum(len(v.free_gpu_ids) for v in views)
        excluded = self.excluded()
        by_priority: dict[str, int] = {}
        for job in self.queue.items:
            name = priority_name(job.priority)
            by_priority[name] = by_priority.get(name, 0) + 1
        return {
            **self.backend.summary(),
            "workers": [
                {
                    "address": v.address,
                    "name": self.backend.workers[v.address].name,
                    "gpus": list(v.gpu_ids),
                    "free_gpus": list(v.free_gpu_ids),
                    "cpus": v.cpus,
                    "free_cpus": v.free_cpus,
                    "memory": v.memory,
                    "running": sorted(r.job_id for r in running if r.worker == v.address),
                    "usage": self._usage(v.address),
                    "excluded_until": iso(excluded.get(v.address)),
                }
                for v in views
            ],
            "gpus": {"total": gpus_total, "busy": gpus_total - gpus_free, "idle": gpus_free},
            "queue_depth": len(self.queue),
            "queue_by_priority": by_priority,
            "running": len(running),
            "waiting_on_dependencies": self.queue.waiting_on_dependencies,
            "idle_gpu_minutes": round(self.idle_gpu_seconds / 60.0, 3),
            "draining": draining,
            "recovery": recovery,
            "autoscaling": self.autoscaler.summary() if self.autoscaler is not None else None,
        }
