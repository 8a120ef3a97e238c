"""What the policy decides about: waiting and running jobs, workers, placements.

Plain frozen values; the orchestrator and the simulator build them, the policy reads them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A waiting job, reduced to what placement needs."""

    id: str
    priority: int  # larger runs first: low=0 normal=100 high=200 urgent=300
    seq: int  # submission order, smaller = earlier
    gpus: int = 0
    cpus: float = 1.0
    memory: int = 0  # bytes, 0 = no claim
    user: str = ""
    name: str = ""  # jobs of one user and name are expected to run about as long
    resumes: bool = False  # preempted: it goes first within its class
    groups: tuple[str, ...] = ()  # the quota groups its GPUs count against
    nodes: int = 1  # a gang: this many distinct workers, each with gpus/cpus/memory
    # Workers it failed on and should not run on again while another could hold it.
    avoid: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job that holds part of a worker now."""

    id: str
    worker: str
    priority: int
    gpus: int = 0
    cpus: float = 1.0
    memory: int = 0
    user: str = ""
    started: float = 0.0  # when it started running (the clock the caller passes in)
    checkpointed: float | None = None  # its last checkpoint; None: none yet
    ends: float | None = None  # when it is expected to end at the latest; None: unknown


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker's capacity and what running jobs leave of it."""

    address: str
    gpu_ids: tuple[str, ...] = ()
    free_gpu_ids: tuple[str, ...] = ()
    cpus: float = 1.0
    free_cpus: float = 1.0
    memory: int = 0  # bytes, 0 = unknown: memory never limits this worker
    free_memory: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Start ``job_id`` on ``worker`` with exactly these GPU ids."""

    job_id: str
    worker: str
    gpu_ids: tuple[str, ...]
    backfill: bool = False  # on a worker held for a job ahead, ending before that one starts
    # A gang's ranks 1..K-1 as (worker, GPU ids); rank 0 is ``worker``/``gpu_ids``.
    ranks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # GPUs of other workers of ``worker``'s host that the job's process uses too (they are
    # in ``gpu_ids``): a job needing more GPUs than one worker has (dask-cuda: one each).
    borrowed: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def slots(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Every rank's (worker, GPU ids), rank 0 first."""
        return ((self.worker, self.gpu_ids), *self.ranks)


def host_of(address: str) -> str:
    """The host part of a worker's address (``tcp://10.0.0.5:40123`` -> ``10.0.0.5``):
    GPU ids are physical per host, so workers of one host may pool their GPUs."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def queue_key(job: QueuedJob) -> tuple[int, int, int]:
    """Sort key of the queue: higher priority first, preempted jobs first within a
    priority, then earlier submission."""
    return (-job.priority, 0 if job.resumes else 1, job.seq)
