"""Autoscaling on our queue: after each scheduling round, what the waiting jobs need.

The policy (``policy.scaling``) sizes the pool from the jobs that wait for capacity and
the workers idle past the grace period; the result goes to the Dask scheduler
(``cluster.demand.QueueDemand``), where the cluster manager (the local cluster's
``Adaptive``, the dask-kubernetes operator, dask-gateway) acts on it. Every change of
decision is an event: on the change feed (the panel) and in the cluster view.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .. import policy
from ..cluster import ClusterBackend
from ..policy.scaling import Pool, Scaling, scale
from ..store import iso
from .feed import ChangeFeed

log = logging.getLogger(__name__)

KEPT_EVENTS = 20
MAX_GANG_VIEWS = 64  # new workers shown to the fit check: more than any gang asks for


class Autoscaler:
    def __init__(
        self,
        pool: Pool,
        backend: ClusterBackend,
        feed: ChangeFeed,
        clock: Callable[[], float],
        spawn: Callable[[Any], asyncio.Task[Any]],
        wake: Callable[[], None],
    ) -> None:
        self.configured = pool
        self.backend = backend
        self.feed = feed
        self.clock = clock
        self.spawn = spawn
        self.wake = wake
        self.idle_since: dict[str, float] = {}
        self.posted: tuple[int, tuple[str, ...]] | None = None
        self._unsent: Scaling | None = None
        self._posting: asyncio.Task[Any] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=KEPT_EVENTS)
        self._timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    @property
    def pool(self) -> Pool:
        """The configured pool in the shape of the cluster's workers once they are seen
        (a remote manager adds workers like the ones it has)."""
        workers = list(self.backend.workers.values())
        if not workers:
            return self.configured
        largest = max(workers, key=lambda w: (len(w.gpu_ids), w.cpus))
        return replace(
            self.configured, gpus=len(largest.gpu_ids), cpus=largest.cpus, memory=largest.memory
        )

    def could_hold(self) -> list[policy.WorkerView]:
        """Workers the pool could still add, free: a job that fits one is not refused."""
        pool = self.pool
        room = min(MAX_GANG_VIEWS, max(0, pool.maximum - len(self.backend.workers)))
        return [pool.worker(f"(a new worker {i + 1})") for i in range(room)]

    def round(
        self, waiting: Sequence[policy.QueuedJob], views: Sequence[policy.WorkerView]
    ) -> Scaling:
        """After a scheduling round: ``waiting`` the queued jobs more capacity would let
        start, in order; ``views`` the workers as the round left them."""
        now = self.clock()
        self._note_idle(views, now)
        decision = scale(self.pool, waiting, views, self.idle_since, now)
        wanted = (decision.target, decision.close)
        if wanted != self.posted:
            self.posted = wanted
            self._unsent = decision
            if self._posting is None or self._posting.done():
                self._posting = self.spawn(self._post_latest())
        self._wake_when_grace_ends(now)
        return decision

    def _note_idle(self, views: Sequence[policy.WorkerView], now: float) -> None:
        present = {view.address for view in views}
        for addr in list(self.idle_since):
            if addr not in present:
                del self.idle_since[addr]
        for view in views:
            if view.free_gpu_ids == view.gpu_ids and view.free_cpus >= view.cpus - 1e-9:
                self.idle_since.setdefault(view.address, now)
            else:
                self.idle_since.pop(view.address, None)

    def _wake_when_grace_ends(self, now: float) -> None:
        """Nothing else happens when an idle worker's grace ends: decide again then."""
        ends = [since + self.configured.grace for since in self.idle_since.values()]
        later = min((t for t in ends if t > now), default=None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if later is not None:
            self._timer = asyncio.get_running_loop().call_later(later - now + 0.05, self.wake)

    async def _post_latest(self) -> None:
        """One post at a time, always the newest decision: posts sent side by side could
        arrive out of order and leave the scheduler with an older demand."""
        while self._unsent is not None:
            decision, self._unsent = self._unsent, None
            await self._post(decision)

    async def _post(self, decision: Scaling) -> None:
        try:
            await self.backend.post_demand(decision.target, decision.close)
        except Exception as err:  # noqa: BLE001 - the cluster manager may not scale
            if self._unsent is None:
                self.posted = None
            log.warning("could not tell the scheduler the queue's demand: %s", err)
            return
        if decision.reason:
            log.info("autoscaling: %s", decision.reason)
            event = {"time": iso(self.clock()), "target": decision.target,
                     "message": decision.reason}  # fmt: skip
            self.events.append(event)
            self.feed.publish("cluster", "", target=decision.target, message=decision.reason)

    def summary(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "minimum": pool.minimum,
            "maximum": pool.maximum,
            "grace": pool.grace,
            "target": self.posted[0] if self.posted else len(self.backend.workers),
            "events": list(self.events),
        }
