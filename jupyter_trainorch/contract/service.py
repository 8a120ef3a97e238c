"""What the API says about the service, the cluster, templates and the change feed, and
the shape of every error."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .jobs import JobState, Shape, Time


class Error(Shape):
    """Every 4xx and 5xx: one sentence, never a traceback."""

    message: str
    reason: str | None = None


class GpuUsage(Shape):
    """One GPU as NVML reads it on its worker."""

    id: str
    utilisation: float = Field(description="percent busy over the last sample")
    memory_used: int = Field(description="bytes")
    memory_total: int = Field(description="bytes")


class WorkerUsage(Shape):
    """A worker's host as last read (every few seconds): CPU and memory, and its GPUs
    where NVML is present."""

    cpu: float = Field(description="percent of the host's CPUs in use (all cores)")
    memory_used: int = Field(description="bytes of memory in use on the host")
    gpus: list[GpuUsage]
    time: Time


class Worker(Shape):
    address: str
    name: str | None
    gpus: list[str]
    free_gpus: list[str]
    cpus: float
    free_cpus: float
    memory: int
    running: list[str]
    usage: WorkerUsage | None
    excluded_until: Time | None = Field(
        description="set while the worker takes no new job after failing job after job"
    )


class GpuCount(Shape):
    total: int
    busy: int
    idle: int


class ScalingEvent(Shape):
    time: Time
    target: int = Field(description="the number of workers asked for")
    message: str


class Autoscaling(Shape):
    """Autoscaling on the queue: the pool's bounds and its recent decisions."""

    minimum: int
    maximum: int
    grace: float = Field(description="seconds a worker stays idle before it may be closed")
    target: int
    events: list[ScalingEvent] = Field(description="the latest decisions, oldest first")


class RecoveryCounts(Shape):
    adopted: int
    collected: int
    lost: int
    requeued: int


class Cluster(Shape):
    kind: str
    address: str | None
    dashboard: str | None
    workers: list[Worker]
    gpus: GpuCount
    queue_depth: int
    running: int
    waiting_on_dependencies: int
    draining: bool
    recovery: RecoveryCounts | None
    queue_by_priority: dict[str, int] = Field(
        description="jobs waiting for resources, by priority class (low, normal, high, urgent)"
    )
    idle_gpu_minutes: float = Field(
        description="GPU-minutes left idle while a job that could use them waited, since "
        "the service started (a good schedule keeps this at 0)"
    )
    autoscaling: Autoscaling | None


class Template(Shape):
    """A resolved template; ``secret_env`` shows names only."""

    name: str
    version: int
    description: str
    kind: Literal["python", "command"]
    command: str
    source: str
    resources: dict[str, Any]
    retries: dict[str, Any]
    timeout: float | None
    priority: int
    env: dict[str, str]
    secret_env: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    params: dict[str, Any]
    experiment: str
    register_model: str
    depends_on: list[dict[str, str]] = Field(description="[{job, when}]: jobs to run after")
    path: str | None
    extends: str | None
    hash: str


class TemplateList(Shape):
    templates: list[Template]
    errors: dict[str, str] = Field(description="template file: why it could not be loaded")


class Change(Shape):
    """One entry of the change feed (``events`` and ``events/ws``)."""

    model_config = {"extra": "allow"}

    seq: int
    kind: Literal["job", "logs", "progress", "cluster", "alert"] = Field(
        description="cluster: an autoscaling decision (job_id empty, no user); alert: an alert "
        "rule routed to the job's owner"
    )
    job_id: str
    time: Time
    user: str | None = None
    state: JobState | None = None
    priority: int | None = None
    attempt: int | None = None
    lines: int | None = Field(None, description="kind logs: how many new lines")
    progress: dict[str, Any] | None = None
    mlflow: list[str] | None = Field(None, description="which mlflow fields changed")
    delay: float | None = Field(None, description="state retrying: seconds of backoff")
    target: int | None = Field(None, description="kind cluster: the number of workers asked for")
    message: str | None = Field(
        None, description="kind cluster: why the pool changes; kind alert: what happened"
    )
    event: str | None = Field(
        None, description="kind alert: what the rule fired on (a job state, queue_wait or log)"
    )


class ChangePage(Shape):
    changes: list[Change]
    last: int
    reset: bool = Field(False, description="the service restarted: read everything again")


class Permissions(Shape):
    submit: bool
    act_on_others_jobs: bool
    see_others_jobs: bool
    stop_service: bool


class GroupQuota(Shape):
    name: str = Field(description="a group of the user's that has a quota")
    gpus: int | None = Field(
        description="GPUs the group's members' running jobs may hold at once; null: no limit"
    )
    queued: int | None = Field(
        description="jobs the group's members may have waiting at once; null: no limit"
    )
    gpus_held: int = Field(description="GPUs the group's members' running jobs hold now")
    waiting: int = Field(description="the group's members' jobs waiting now")


class Quota(Shape):
    gpus: int | None = Field(
        description="GPUs the user's running jobs may hold at once; null: no limit"
    )
    queued: int | None = Field(description="jobs the user may have waiting at once; null: no limit")
    gpus_held: int = Field(description="GPUs the user's running jobs hold now")
    waiting: int = Field(description="the user's jobs waiting now")
    groups: list[GroupQuota] = Field(description="the quotas of the user's groups")


class Me(Shape):
    name: str
    admin: bool
    mode: Literal["single-user", "hub"]
    others_jobs: Literal["queue", "hidden", "all"]
    may: Permissions
    quota: Quota


class ServiceStatus(Shape):
    pid: int
    host: str
    started: Time
    uptime: float
    mode: Literal["single-user", "hub"]
    store: str
    cluster: dict[str, str | None]
    workers: int
    gpus: GpuCount
    running: int
    queued: int
    draining: bool
    recovery: RecoveryCounts | None
    reexecutions: int


class StopRequest(Shape):
    force: bool = False
    drain: bool = False


class Stopping(Shape):
    stopping: bool
    draining: int | bool
