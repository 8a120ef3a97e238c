"""``TRAINORCH_CLUSTER=gateway``: a cluster from a dask-gateway server.

The backend asks the gateway at ``cluster_options.address`` for a cluster (or connects to
``cluster_name``), with the worker cores, memory, GPUs and image set through the cluster
options the gateway offers, and connects the orchestrator's client to its scheduler through
the gateway's proxy (TLS, with the credentials the gateway hands out).

Which options a gateway offers is up to its administrator (``c.Backend.cluster_options``);
the names read here are those of dask-gateway's documentation: ``worker_cores``,
``worker_memory``, ``image``, ``environment`` and, by our convention, ``worker_gpus``. An
option we would set that the gateway does not offer is an error that names it, never
silently dropped: a worker that does not advertise its GPUs never runs a GPU job.

dask_gateway is imported only when the backend starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_private
from .managed import (
    CLUSTER_DASK_ENVIRONMENT,
    ManagedClusterBackend,
    backend_options,
    resources_variable,
)
from .options import ClusterOptions, ClusterOptionsError

if TYPE_CHECKING:
    from ..orchestrator.config import OrchestratorConfig

log = logging.getLogger(__name__)

STATE_FILE = "gateway-cluster.json"
GIB = 2**30


def gateway_option_values(options: ClusterOptions, offered: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway cluster options to set, from ours; ``offered`` is what the gateway offers
    (name -> its default). Raises ClusterOptionsError naming an option it does not offer."""
    values: dict[str, Any] = {}

    def put(name: str, value: Any, ours: str) -> None:
        if name not in offered:
            raise ClusterOptionsError(
                f"{ours} needs the gateway cluster option {name!r}, which this gateway does "
                f"not offer (it offers: {', '.join(sorted(offered)) or 'none'})"
            )
        values[name] = value

    if options.cores is not None:
        put("worker_cores", options.cores, "cores")
    if options.memory is not None:
        put("worker_memory", _memory_value(options.memory, offered.get("worker_memory")), "memory")
    if options.image is not None:
        put("image", options.image, "image")
    if options.gpus_per_worker and "worker_gpus" in offered:
        values["worker_gpus"] = options.gpus_per_worker
    environment = {**options.environment, **resources_variable(options.gpus_per_worker)}
    if "environment" in offered:
        values["environment"] = {
            **(offered["environment"] or {}),
            **CLUSTER_DASK_ENVIRONMENT,
            **environment,
        }
    elif environment:
        ours = "gpus_per_worker" if options.gpus_per_worker else "environment"
        put("environment", environment, ours)
    else:
        log.warning(
            "the gateway offers no 'environment' option: set %s on its clusters "
            "(c.ClusterConfig.environment) so that Dask leaves retries to trainorch and runs "
            "its workers without the profiler",
            ", ".join(f"{k}={v}" for k, v in CLUSTER_DASK_ENVIRONMENT.items()),
        )
    for name, value in options.gateway_options.items():
        put(name, value, f"gateway_options {name!r}")
    return values


def _memory_value(size: int, default: Any) -> Any:
    """A gateway's memory option is a number of GiB (dask-gateway's examples) or a text."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return f"{size / GIB:g} GiB"
    if isinstance(default, int):
        return max(1, round(size / GIB))
    return size / GIB


class GatewayBackend(ManagedClusterBackend):
    """A dask-gateway cluster, kept across restarts of the orchestrator: the name of the one
    it created is remembered in the data folder and connected to again while it runs."""

    kind = "gateway"

    def __init__(self, options: ClusterOptions, state_dir: Path) -> None:
        super().__init__(options)
        self.state_file = state_dir / STATE_FILE
        self.gateway: Any = None
        self.cluster: Any = None

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> GatewayBackend:
        return cls(backend_options(config, "gateway"), config.data_dir)

    @property
    def dashboard_link(self) -> str | None:
        # The scheduler's own link is an address inside the gateway's network.
        return getattr(self.cluster, "dashboard_link", None)

    async def _open_cluster(self) -> str:
        from dask_gateway import Gateway

        self.gateway = Gateway(
            self.options.address,
            proxy_address=self.options.proxy_address,
            auth=self.options.auth,
            asynchronous=True,
        )
        name = self.options.cluster_name or await self._remembered_cluster()
        if name is None:
            name = await self.gateway.submit(await self._cluster_request())
            self._remember(name)
            log.info("asked the gateway at %s for cluster %s", self.options.address, name)
        self.cluster = await self.gateway.connect(name)
        minimum, maximum = self.autoscale
        if maximum:
            # The gateway's adaptive loop asks the scheduler, where QueueDemand answers.
            await self.gateway.adapt_cluster(name, minimum=minimum, maximum=maximum)
        # Someone else's cluster keeps its size unless the options name one.
        elif self.options.workers is not None or not self.options.cluster_name:
            workers = 1 if self.options.workers is None else self.options.workers
            await self.gateway.scale_cluster(name, workers)
        self.security = self.cluster.security
        return str(self.cluster.scheduler_address)

    async def _cluster_request(self) -> Any:
        requested = await self.gateway.cluster_options()
        try:
            values = gateway_option_values(self.options, dict(requested))
        except ClusterOptionsError as err:
            raise ValueError(
                f"TRAINORCH_CLUSTER_OPTIONS does not fit this gateway: {err}"
            ) from None
        for name, value in values.items():
            try:
                requested[name] = value
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"the gateway at {self.options.address} refuses {name}={value!r}: {err}"
                ) from None
        return requested

    async def _remembered_cluster(self) -> str | None:
        """The cluster this backend created before, while the gateway still runs it."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("address") != self.options.address:
            return None
        running = {report.name for report in await self.gateway.list_clusters()}
        return state.get("name") if state.get("name") in running else None

    def _remember(self, name: str) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.state_file, json.dumps({"address": self.options.address, "name": name}))

    async def _release_cluster(self, stop_cluster: bool) -> None:
        # A cluster named in the options is someone else's: it is never shut down from here.
        shutdown = stop_cluster and not self.options.cluster_name
        if self.cluster is not None:
            await self.cluster.close(shutdown=shutdown)
            self.cluster = None
            if shutdown:
                self.state_file.unlink(missing_ok=True)
        if self.gateway is not None:
            await self.gateway.close()
            self.gateway = None
