"""The base of backends whose cluster a Dask deployment tool runs (dask-gateway, the
dask-kubernetes operator): the backend asks the tool for a cluster, or finds the one it
asked for before, and connects with the credentials the tool hands out.

The cluster outlives the orchestrator, as the embedded local one does: a restarted service
finds it again and adopts the attempts still running there. Only ``close(stop_cluster=True)``
(the service stopped, not detached) ends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends import ClusterBackend, WorkersChanged
from .options import ClusterOptions, ClusterOptionsError, parse_cluster_options

if TYPE_CHECKING:
    from ..orchestrator.config import OrchestratorConfig


def backend_options(config: OrchestratorConfig, backend: str) -> ClusterOptions:
    """``config.cluster_options`` for ``backend``; a wrong one is a ValueError naming it
    (``TrainOrch.to_config`` has checked it already unless a config was built by hand)."""
    try:
        return parse_cluster_options(config.cluster_options, backend)
    except ClusterOptionsError as err:
        raise ValueError(f"TRAINORCH_CLUSTER_OPTIONS is wrong: {err}") from None


class ManagedClusterBackend(ClusterBackend):
    """Subclasses open the cluster (``_open_cluster``) and let go of it (``_release_cluster``)."""

    def __init__(self, options: ClusterOptions) -> None:
        super().__init__()
        self.options = options
        self.security: Any = None  # distributed Security for the scheduler, if it needs TLS

    async def _open_cluster(self) -> str:
        """Create or find the cluster; return its scheduler address (and set ``security``)."""
        raise NotImplementedError

    async def _release_cluster(self, stop_cluster: bool) -> None:
        raise NotImplementedError

    async def start(self, on_change: WorkersChanged) -> None:
        # As ClusterBackend.start, with the credentials the deployment tool handed out.
        from distributed import Client

        self._on_change = on_change
        self.address = await self._open_cluster()
        self.client = await Client(
            self.address, security=self.security, asynchronous=True, name="trainorch-orchestrator"
        )
        if self.autoscale[1]:
            # Before the tool's autoscaler asks: it must hear our queue's demand, not Dask's.
            from .demand import QueueDemand

            await self.client.register_plugin(QueueDemand())
            self._demand_installed = True
        await self._follow_workers()

    async def close(self, stop_cluster: bool = False) -> None:
        await super().close()
        await self._release_cluster(stop_cluster)


def resources_variable(gpus: int) -> dict[str, str]:
    """The environment that makes a worker advertise ``GPU=gpus``. The resource must be given
    as one JSON value: dask lower-cases the names of nested variables, and a worker started
    with ``DASK_DISTRIBUTED__WORKER__RESOURCES__GPU`` advertises ``gpu``, which no task asks for."""
    if gpus <= 0:
        return {}
    return {"DASK_DISTRIBUTED__WORKER__RESOURCES": f'{{"GPU": {gpus}}}'}


# Dask must not run a job task again when its worker dies: the orchestrator's retry policy does.
NO_DASK_RETRIES = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
# Dask's profiler reads every thread's stack (``sys._current_frames``) every 10 ms. On
# Python 3.11 that call deadlocks the worker when a garbage collection starts inside it
# while a thread ends (CPython gh-106883): a worker ending a few threads with every job hung
# so after some thousand jobs. A job worker's own Python work is not worth profiling.
NO_WORKER_PROFILER = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
# What every cluster of ours runs with: as worker environment, and as the Dask config of a
# process that starts its workers itself.
CLUSTER_DASK_ENVIRONMENT = {**NO_DASK_RETRIES, **NO_WORKER_PROFILER}
CLUSTER_DASK_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.worker.profile.enabled": False,
}
