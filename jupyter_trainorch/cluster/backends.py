"""Dask cluster backends and the live view of their workers.

A backend starts or connects to a Dask cluster on the orchestrator's event loop,
keeps an asynchronous ``distributed.Client`` and a view of every worker's GPUs,
CPUs and memory, and reports workers joining and leaving. It never decides which
job runs where.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerInfo:
    address: str
    name: str
    gpu_ids: tuple[str, ...]
    cpus: float
    memory: int
    advertises_gpus: bool  # the worker declares a ``GPU`` resource (guard against double booking)


def _visible_gpu_ids(dask_worker: Any = None) -> list[str]:
    """Run on a worker: the GPU ids its processes may use, in order."""
    from distributed import get_worker

    worker = dask_worker or get_worker()
    count = int(worker.state.total_resources.get("GPU", 0))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if len(ids) < count:
        ids = [str(i) for i in range(count)]
    return ids[:count]


WorkersChanged = Callable[[list[WorkerInfo], list[str]], Awaitable[None]]


class ClusterBackend:
    """Base: connect a client to ``self.address`` and track workers."""

    kind = "existing"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.client: Any = None
        self.workers: dict[str, WorkerInfo] = {}
        self._on_change: WorkersChanged | None = None
        self._refresh_lock = asyncio.Lock()

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link if self.client is not None else None
        except Exception:  # noqa: BLE001 - no dashboard (bokeh missing) is fine
            return None

    async def _start_cluster(self) -> str:
        if not self.address:
            raise ValueError("TRAINORCH_CLUSTER must be 'local' or a tcp:// scheduler address")
        return self.address

    async def start(self, on_change: WorkersChanged) -> None:
        from distributed import Client

        self._on_change = on_change
        address = await self._start_cluster()
        self.client = await Client(address, asynchronous=True, name="trainorch-orchestrator")
        self.client.subscribe_topic("all", self._scheduler_event)
        await self.refresh()

    async def close(self) -> None:
        if self.client is not None:
            for topic in list(self.client._event_handlers):
                self.client.unsubscribe_topic(topic)
            await self.client.close()
            self.client = None

    def _scheduler_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        if isinstance(message, dict) and message.get("action") in ("add-worker", "remove-worker"):
            asyncio.ensure_future(self.refresh())

    async def refresh(self) -> None:
        """Re-read the scheduler's workers; report who joined and who left."""
        async with self._refresh_lock:
            identity = await self.client.scheduler.identity(n_workers=-1)
            current = identity.get("workers", {})
            joined = [addr for addr in current if addr not in self.workers]
            left = [addr for addr in self.workers if addr not in current]
            added: list[WorkerInfo] = []
            for addr in joined:
                info = current[addr]
                resources = info.get("resources") or {}
                gpu_ids: tuple[str, ...] = ()
                if resources.get("GPU"):
                    try:
                        ran = await self.client.run(_visible_gpu_ids, workers=[addr])
                        gpu_ids = tuple(ran.get(addr, ()))
                    except Exception as err:  # noqa: BLE001 - worker left meanwhile
                        log.warning("could not read GPU ids of %s: %s", addr, err)
                        continue
                worker = WorkerInfo(
                    address=addr,
                    name=str(info.get("name", addr)),
                    gpu_ids=gpu_ids,
                    cpus=float(resources.get("CPU", info.get("nthreads", 1))),
                    memory=int(info.get("memory_limit") or 0),
                    advertises_gpus=bool(resources.get("GPU")),
                )
                self.workers[addr] = worker
                added.append(worker)
            for addr in left:
                self.workers.pop(addr, None)
        if (added or left) and self._on_change is not None:
            await self._on_change(added, left)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.client.scheduler.address if self.client is not None else self.address,
            "dashboard": self.dashboard_link,
        }


class LocalBackend(ClusterBackend):
    """A Dask cluster of worker processes on this machine, started on first use.

    Each worker advertises ``gpus_per_worker`` GPU slots with distinct ids, so the
    whole GPU path (placement, ``CUDA_VISIBLE_DEVICES``) runs without a GPU.
    """

    kind = "local"

    def __init__(self, n_workers: int = 2, gpus_per_worker: int = 0, slots_per_worker: int = 4) -> None:
        super().__init__()
        self.n_workers = max(1, n_workers)
        self.gpus_per_worker = max(0, gpus_per_worker)
        self.slots_per_worker = max(1, slots_per_worker)
        self.cluster: Any = None

    async def _start_cluster(self) -> str:
        import dask
        from distributed import Nanny, Scheduler, SpecCluster

        # Job tasks are retried by our policy, never re-run by Dask after a worker dies.
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        # The scheduler lives in this process (a kernel, the Jupyter server): keep its
        # routine INFO lines out of the user's output, as LocalCluster does.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        scheduler = {
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"},
        }
        workers = {}
        for i in range(self.n_workers):
            ids = [str(i * self.gpus_per_worker + g) for g in range(self.gpus_per_worker)]
            resources = {"CPU": float(self.slots_per_worker)}
            if ids:
                resources["GPU"] = float(len(ids))
            workers[f"trainorch-{i}"] = {
                "cls": Nanny,
                "options": {
                    "host": "127.0.0.1",
                    "nthreads": self.slots_per_worker,
                    "resources": resources,
                    "env": {"CUDA_VISIBLE_DEVICES": ",".join(ids)},
                    "memory_limit": 0,
                    "silence_logs": logging.WARNING,
                },
            }
        self.cluster = await SpecCluster(
            workers=workers, scheduler=scheduler, asynchronous=True, name="trainorch-local"
        )
        return self.cluster.scheduler_address

    async def close(self) -> None:
        await super().close()
        if self.cluster is not None:
            await self.cluster.close()
            self.cluster = None


class LocalCUDABackend(LocalBackend):
    """One dask-cuda worker per real GPU (dask_cuda is imported only here)."""

    kind = "local-cuda"

    async def _start_cluster(self) -> str:
        import dask
        from dask_cuda import LocalCUDACluster

        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        # dask-cuda pins one GPU per worker but sets no resources itself.
        self.cluster = await LocalCUDACluster(
            asynchronous=True,
            resources={"GPU": 1, "CPU": self.slots_per_worker},
            threads_per_worker=self.slots_per_worker,
            host="127.0.0.1",
        )
        return self.cluster.scheduler_address


def gpus_present() -> bool:
    """True when an NVIDIA GPU is visible (without importing any CUDA library)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")


def make_backend(cluster: str, n_workers: int, gpus_per_worker: int, slots_per_worker: int) -> ClusterBackend:
    """``local`` (CPU workers, or dask-cuda when GPUs and dask_cuda are present),
    ``local-cuda``, or the address of a running scheduler (``tcp://host:8786``)."""
    spec = (cluster or "local").strip()
    if spec == "local":
        if gpus_per_worker == 0 and gpus_present():
            try:
                import dask_cuda  # noqa: F401
            except ImportError:
                log.warning("GPUs are present but dask-cuda is not installed; using CPU workers")
            else:
                return LocalCUDABackend(slots_per_worker=slots_per_worker)
        return LocalBackend(n_workers, gpus_per_worker, slots_per_worker)
    if spec == "local-cuda":
        return LocalCUDABackend(slots_per_worker=slots_per_worker)
    if "://" in spec:
        return ClusterBackend(spec)
    raise ValueError(
        f"TRAINORCH_CLUSTER must be 'local', 'local-cuda' or a scheduler address such as tcp://host:8786, not {spec!r}"
    )
