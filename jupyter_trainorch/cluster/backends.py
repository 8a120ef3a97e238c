"""Dask cluster backends and the live view of their workers.

A backend starts or connects to a Dask cluster on the orchestrator's event loop,
keeps an asynchronous ``distributed.Client`` and a view of every worker's GPUs,
CPUs and memory, and reports workers joining and leaving. It never decides which
job runs where.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environ import without_service_settings, worker_settings
from ..processes import pid_alive, stop_process
from .gpus import visible_gpu_ids
from .local_process import read_state
from .usage import read_usage

if TYPE_CHECKING:
    from ..orchestrator.config import OrchestratorConfig

CLUSTER_START_TIMEOUT = 120.0
# Workers are followed by the scheduler's add/remove events, and re-read this often as well:
# a worker that registers before our subscription reaches the scheduler announces itself to
# nobody, and the jobs it could run would wait forever.
WORKERS_REREAD_SECONDS = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerInfo:
    address: str
    name: str
    gpu_ids: tuple[str, ...]
    cpus: float
    memory: int
    advertises_gpus: bool  # the worker declares a ``GPU`` resource (guard against double booking)


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
        self._reread: asyncio.Task[None] | None = None
        self._demand_installed = False
        # Autoscaling on the queue (minimum, maximum workers); maximum 0: the size stays.
        self.autoscale: tuple[int, int] = (0, 0)

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> ClusterBackend:
        """The backend of ``c.TrainOrch.cluster_backend_class``, from the orchestrator's
        settings; this one connects to the scheduler at ``config.cluster``."""
        return cls(config.cluster)

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
        await self._follow_workers()

    async def _follow_workers(self) -> None:
        self.client.subscribe_topic("all", self._scheduler_event)
        await self.refresh()
        self._reread = asyncio.ensure_future(self._reread_workers())

    async def _reread_workers(self) -> None:
        while True:
            await asyncio.sleep(WORKERS_REREAD_SECONDS)
            try:
                await self.refresh()
            except Exception as err:  # noqa: BLE001 - the scheduler away for a moment
                log.debug("could not re-read the cluster's workers: %s", err)

    async def close(self, stop_cluster: bool = False) -> None:
        """Disconnect; ``stop_cluster`` also ends a cluster this backend started."""
        if self._reread is not None:
            self._reread.cancel()
            self._reread = None
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
                        ran = await self.client.run(visible_gpu_ids, workers=[addr])
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

    def cluster_gone(self) -> bool:
        """True when a cluster this backend started has died (an existing one is not ours)."""
        return False

    async def read_usage(self) -> dict[str, dict[str, Any]]:
        """Each worker's host CPU and memory and its GPUs' NVML readings, by address."""
        if self.client is None or not self.workers:
            return {}
        return await self.client.run(read_usage, on_error="return")

    async def post_demand(self, target: int, close: tuple[str, ...]) -> None:
        """Tell the scheduler how many workers the queue wants and which idle ones may go
        (``demand.QueueDemand``, installed on first use), for the cluster manager to act on."""
        from .demand import QueueDemand

        if not self._demand_installed:
            await self.client.register_plugin(QueueDemand())  # idempotent: one per scheduler
            self._demand_installed = True
        await self.client.scheduler.trainorch_demand(target=target, closable=list(close))

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.client.scheduler.address if self.client is not None else self.address,
            "dashboard": self.dashboard_link,
        }


class LocalBackend(ClusterBackend):
    """A Dask cluster of worker processes on this machine, in a process of its own.

    The cluster (``local_process``) is started detached on first use and found again
    through its state file, so it outlives the orchestrator: jobs keep running while the
    service restarts. Each worker advertises ``gpus_per_worker`` GPU slots with distinct
    ids, so the whole GPU path (placement, ``CUDA_VISIBLE_DEVICES``) runs without a GPU.
    """

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        n_workers: int = 2,
        gpus_per_worker: int = 0,
        slots_per_worker: int = 4,
        idle_timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.state_file = state_dir / "cluster.json"
        self.n_workers = max(1, n_workers)
        self.gpus_per_worker = max(0, gpus_per_worker)
        self.slots_per_worker = max(1, slots_per_worker)
        self.idle_timeout = idle_timeout
        self.pid: int | None = None

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> ClusterBackend:
        workers = config.workers
        if config.autoscale_maximum:
            workers = min(max(workers, config.autoscale_minimum), config.autoscale_maximum)
        return cls(
            config.data_dir, workers, config.gpus_per_worker, config.slots_per_worker,
            config.cluster_idle_timeout,
        )  # fmt: skip

    def scaling_arguments(self) -> list[str]:
        minimum, maximum = self.autoscale
        if not maximum:
            return []
        return ["--autoscale-minimum", str(minimum), "--autoscale-maximum", str(maximum)]

    def _arguments(self) -> list[str]:
        return [
            "--workers", str(self.n_workers),
            "--gpus-per-worker", str(self.gpus_per_worker),
            "--slots-per-worker", str(self.slots_per_worker),
            "--idle-timeout", str(self.idle_timeout),
            *self.scaling_arguments(),
        ]  # fmt: skip

    async def _start_cluster(self) -> str:
        running = read_state(self.state_file)
        if running and pid_alive(running.get("pid", 0)) and await _answers(running["address"]):
            self.pid = running["pid"]
            return running["address"]
        return await asyncio.get_running_loop().run_in_executor(None, self._launch)

    def _launch(self) -> str:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)
        log_path = self.state_file.with_name("cluster.log")
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_trainorch.cluster.local_process",
                 str(self.state_file), *self._arguments()],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env={**without_service_settings(), **worker_settings()}, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while time.monotonic() < deadline:
            state = read_state(self.state_file)
            if state and state.get("pid") == proc.pid:
                self.pid = proc.pid
                return state["address"]
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"the local Dask cluster did not start; its log ends with:\n{tail}")

    def cluster_gone(self) -> bool:
        return self.pid is not None and not pid_alive(self.pid)

    async def close(self, stop_cluster: bool = False) -> None:
        await super().close()
        if stop_cluster and self.pid:
            await asyncio.get_running_loop().run_in_executor(None, stop_process, self.pid)
            self.pid = None


class LocalCUDABackend(LocalBackend):
    """One dask-cuda worker per real GPU (dask_cuda is imported only in the cluster process)."""

    kind = "local-cuda"

    def _arguments(self) -> list[str]:
        return ["--cuda", "--slots-per-worker", str(self.slots_per_worker),
                "--idle-timeout", str(self.idle_timeout), *self.scaling_arguments()]  # fmt: skip


async def _answers(address: str) -> bool:
    from distributed.comm import connect

    try:
        comm = await connect(address, timeout=5)
    except Exception:  # noqa: BLE001 - stale state file
        return False
    await comm.close()
    return True


def gpus_present() -> bool:
    """True when an NVIDIA GPU is visible (without importing any CUDA library)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")


def make_backend(config: OrchestratorConfig) -> ClusterBackend:
    """A backend of ``config.cluster_backend_class``, else the one ``config.cluster`` names:
    ``local`` (CPU workers, or dask-cuda when GPUs and dask_cuda are present), ``local-cuda``,
    or the address of a running scheduler (``tcp://host:8786``). A local cluster keeps its
    state file in the data folder."""
    backend = (config.cluster_backend_class or _backend_class(config)).from_config(config)
    backend.autoscale = (config.autoscale_minimum, config.autoscale_maximum)
    return backend


def _backend_class(config: OrchestratorConfig) -> type[ClusterBackend]:
    spec = config.cluster
    if spec == "local-cuda":
        return LocalCUDABackend
    if spec == "local":
        if config.gpus_per_worker == 0 and gpus_present():
            if importlib.util.find_spec("dask_cuda") is not None:
                return LocalCUDABackend
            log.warning("GPUs are present but dask-cuda is not installed; using CPU workers")
        return LocalBackend
    if spec == "gateway":
        from .gateway import GatewayBackend

        return GatewayBackend
    if spec == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend
    if spec == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend
    if "://" in spec:
        return ClusterBackend
    raise ValueError(
        "TRAINORCH_CLUSTER must be 'local', 'local-cuda', 'gateway', 'kubernetes', 'slurm' or a "
        f"scheduler address such as tcp://host:8786, not {spec!r}"
    )
