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


class Worker(Shape):
    address: str
    name: str | None
    gpus: list[str]
    free_gpus: list[str]
    cpus: float
    free_cpus: float
    memory: int
    running: list[str]


class GpuCount(Shape):
    total: int
    busy: int


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
    kind: Literal["job", "logs", "progress"]
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
