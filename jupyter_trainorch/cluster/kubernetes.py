"""``TRAINORCH_CLUSTER=kubernetes``: a DaskCluster of the dask-kubernetes operator.

``cluster_spec(options)`` is the whole DaskCluster resource, made from our settings alone
(tests check it without a Kubernetes cluster): worker pods of ``image`` with
``nvidia.com/gpu`` limits, each worker advertising ``--resources GPU=n`` because the
placement of jobs depends on it, and a scheduler that leaves retries to trainorch.

The cluster is named (``name``, default ``trainorch``), so a restarted orchestrator connects
to the one already running instead of making another. dask_kubernetes is imported only when
the backend starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .managed import CLUSTER_DASK_ENVIRONMENT, ManagedClusterBackend, backend_options
from .options import ClusterOptions

if TYPE_CHECKING:
    from ..orchestrator.config import OrchestratorConfig

DEFAULT_NAME = "trainorch"
GPU_LIMIT = "nvidia.com/gpu"
# GPU nodes are commonly tainted so that only pods asking for GPUs land there.
GPU_TOLERATION = {"key": GPU_LIMIT, "operator": "Exists", "effect": "NoSchedule"}


def cluster_spec(options: ClusterOptions) -> dict[str, Any]:
    """The DaskCluster custom resource for ``options`` (which must name an ``image``)."""
    from dask_kubernetes.operator import make_cluster_spec

    if not options.image:
        raise ValueError("TRAINORCH_CLUSTER_OPTIONS must name the worker image for kubernetes")
    spec = make_cluster_spec(
        name=options.name or DEFAULT_NAME,
        image=options.image,
        n_workers=1 if options.workers is None else options.workers,
        env={**options.environment, **CLUSTER_DASK_ENVIRONMENT},
        worker_command=worker_command(options),
        idle_timeout=0,  # trainorch keeps the cluster while jobs may come
    )
    if options.namespace:
        spec["metadata"]["namespace"] = options.namespace
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    # make_cluster_spec's "dask-scheduler" script is gone from distributed 2026.
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    del scheduler["resources"]
    worker_pod = spec["spec"]["worker"]["spec"]
    worker = worker_pod["containers"][0]
    worker["env"] = [{"name": k, "value": v} for k, v in options.environment.items()]
    worker["resources"] = worker_resources(options)
    if options.gpus_per_worker:
        worker_pod["tolerations"] = [GPU_TOLERATION]
    return spec


def worker_command(options: ClusterOptions) -> list[str]:
    """``dask worker`` with the threads, memory and GPU resource of one worker pod (the
    operator adds the scheduler's address and the worker's name)."""
    command = ["dask", "worker", "--nthreads", str(options.cores or 1)]
    if options.memory:
        command += ["--memory-limit", str(options.memory)]
    if options.gpus_per_worker:
        command += ["--resources", f"GPU={options.gpus_per_worker}"]
    return command


def worker_resources(options: ClusterOptions) -> dict[str, dict[str, str]]:
    """Requests and limits of a worker container; quantities are text in Kubernetes."""
    requests = {"cpu": str(options.cores or 1)}
    if options.memory:
        requests["memory"] = str(options.memory)
    limits = dict(requests)
    if options.gpus_per_worker:
        limits[GPU_LIMIT] = str(options.gpus_per_worker)
    return {"requests": requests, "limits": limits}


class KubernetesBackend(ManagedClusterBackend):
    """A DaskCluster made by the operator; connected to again by name after a restart."""

    kind = "kubernetes"

    def __init__(self, options: ClusterOptions) -> None:
        super().__init__(options)
        self.cluster: Any = None

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> KubernetesBackend:
        return cls(backend_options(config, "kubernetes"))

    async def _open_cluster(self) -> str:
        from dask_kubernetes.operator import KubeCluster

        # Connects when a DaskCluster of this name exists (ours, from before a restart).
        self.cluster = await KubeCluster(
            custom_cluster_spec=cluster_spec(self.options),
            namespace=self.options.namespace,
            shutdown_on_close=False,
            asynchronous=True,
            quiet=True,
        )
        minimum, maximum = self.autoscale
        if maximum:
            # A DaskAutoscaler: the operator asks the scheduler, where QueueDemand answers.
            await self.cluster.adapt(minimum=minimum, maximum=maximum)
        elif self.options.workers is not None:
            await self.cluster.scale(self.options.workers)
        return str(self.cluster.scheduler_address)

    async def _release_cluster(self, stop_cluster: bool) -> None:
        if self.cluster is not None:
            self.cluster.shutdown_on_close = stop_cluster
            await self.cluster.close()
            self.cluster = None
