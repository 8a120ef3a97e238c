"""Our queue's demand, told to the Dask scheduler so that cluster managers scale on it.

Every manager that scales a Dask cluster asks the scheduler: a SpecCluster's ``Adaptive``
calls its ``adaptive_target`` and ``workers_to_close`` handlers, the dask-kubernetes
operator and dask-gateway call the same methods. Jobs waiting in our queue are not Dask
tasks, so Dask's own answers miss them. ``QueueDemand`` replaces both answers with the
orchestrator's (``policy.scaling``), posted through the ``trainorch_demand`` handler.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger(__name__)

PLUGIN_NAME = "trainorch-demand"


class QueueDemand(SchedulerPlugin):
    """Runs in the scheduler. Until the orchestrator has spoken it keeps the workers there
    are; it only ever offers for closing the workers the orchestrator found idle, and of
    those only the ones that hold no task at the moment of asking."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.target: int | None = None
        self.closable: tuple[str, ...] = ()
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["trainorch_demand"] = self.set_demand
        # Managers reach these both over the comm (handlers) and as methods (HTTP API).
        scheduler.handlers["adaptive_target"] = self.adaptive_target
        scheduler.handlers["workers_to_close"] = self.workers_to_close
        scheduler.adaptive_target = self.adaptive_target
        scheduler.workers_to_close = self.workers_to_close

    def set_demand(self, target: int, closable: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        # Not ``close``: Dask's comm protocol reads that key as "close the comm".
        self.target = max(0, int(target))
        self.closable = tuple(str(address) for address in closable)
        return {"target": self.target, "closable": list(self.closable)}

    def adaptive_target(self, target_duration: Any = None) -> int:
        if self.target is None:
            return len(self.scheduler.workers)
        return self.target

    def workers_to_close(
        self,
        memory_ratio: Any = None,
        n: int | None = None,
        key: Any = None,
        minimum: int | None = None,
        target: int | None = None,
        attribute: str = "address",
    ) -> list[str]:
        workers = self.scheduler.workers
        idle = [
            workers[address]
            for address in self.closable
            if address in workers and not workers[address].processing
        ]
        limit = len(idle)
        if target is not None:
            limit = min(limit, max(0, len(workers) - target))
        if n is not None:
            limit = min(limit, n)
        if minimum is not None:
            limit = min(limit, max(0, len(workers) - minimum))
        chosen = [getattr(ws, attribute) for ws in idle[:limit]]
        if chosen:
            log.info("offering idle workers for closing: %s", chosen)
        return chosen
