"""What the API says about jobs: the job JSON, its attempts, pages of jobs and log lines,
and what a client sends to submit or change one."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ..spec.model import MAX_NAME_CHARS, Dependency, JobSpec, Resources, TemplateRef
from .limits import MAX_GROUP_JOBS
from .states import ALL_STATES

JobState = Enum("JobState", {state.upper(): state for state in ALL_STATES}, type=str)  # type: ignore[misc]
Time = Annotated[str, Field(description="ISO 8601, UTC (…Z)")]
Action = Literal["read", "rerun", "cancel", "retry", "set_priority"]


class Shape(BaseModel):
    """An answer's shape: exactly these fields (a test holds real answers to it)."""

    model_config = ConfigDict(extra="forbid")


class Attempt(Shape):
    n: int = Field(ge=1)
    state: JobState
    worker: str | None
    gpu_ids: list[str]
    started: Time | None
    ended: Time | None
    exit_code: int | None
    error: str | None
    infrastructure: bool = Field(description="lost to a worker or restart, not the job's fault")
    cause: (
        Literal["job", "out_of_memory", "timeout", "infrastructure", "preempted", "cancelled"]
        | None
    ) = Field(description="why it ended without success; null while it runs or once it succeeded")
    mlflow_run_id: str | None
    process_started: Time | None
    pid: int | None


class Progress(Shape):
    model_config = ConfigDict(extra="allow")

    step: float | None = None
    total: float | None = None
    fraction: float | None = None
    message: str | None = None
    metrics: dict[str, Any] | None = None
    updated: Time | None = None


class MlflowLinks(Shape):
    model_config = ConfigDict(extra="allow")

    experiment_id: str | None = None
    run_id: str | None = None
    url: str | None = None
    warning: str | None = Field(None, description="why tracking is incomplete, one sentence")
    metrics: dict[str, float] | None = Field(None, description="the last attempt's final values")
    model: Any = Field(None, description="the registered model version")


class JobSummary(Shape):
    """What everyone may see of a job (in the queue view, of other users' jobs too)."""

    id: str
    name: str
    user: str
    state: JobState
    priority: int
    priority_class: str
    resources: Resources
    created: Time | None
    started: Time | None
    ended: Time | None
    terminal: bool
    queue_position: int | None = Field(None, description="1 = dispatched next")
    wait_reason: str | None = Field(None, description="why a waiting job has not started")
    estimated_start: Time | None = Field(
        None, description="a queued job's expected start, where the run times of the jobs "
        "ahead of it and holding what it needs are known (past runs of the same name)"
    )  # fmt: skip
    estimated_end: Time | None = Field(
        None,
        description="a running job's expected end (past runs of the same name, or its progress)",
    )
    actions: list[Action] = Field(description="what the caller may do with it now")


class QueueRow(JobSummary):
    """Another user's job as a queue row: enough to see why one's own job waits."""

    restricted: Literal[True]


class DependencyCondition(Shape):
    job_id: str
    when: Literal["ok", "any", "notok"] = Field(
        description="run after it succeeded (ok), ended in any way (any), or failed or was "
        "cancelled (notok)"
    )


class Job(JobSummary):
    """A job as its owner (or an admin) sees it. ``spec`` only in ``GET jobs/{id}``; its
    ``secret_env`` values are always ``***``."""

    kind: Literal["python", "command"]
    depends_on: list[str] = Field(description="ids of the jobs it waits on, whatever the condition")
    dependencies: list[DependencyCondition]
    template: TemplateRef
    params: dict[str, Any]
    attempts: list[Attempt]
    max_retries: int
    attempts_allowed: int = Field(description="attempts the retry policy allows in all")
    reexecutions: int
    timeout: float | None
    progress: Progress
    mlflow: MlflowLinks
    error: str | None
    outputs: list[str]
    experiment: str
    group: str
    code_hash: str
    rerun_of: str | None
    has_outputs: bool
    spec: JobSpec | None = None


class JobView(RootModel[Job | QueueRow]):
    """One job as the caller may see it: whole (owner, admin) or as a queue row."""


class JobList(Shape):
    jobs: list[Job | QueueRow]
    total: int
    limit: int
    offset: int


class LogLine(Shape):
    id: int = Field(description="cursor: pass the last one as after=")
    attempt: int
    seq: int
    stream: str
    text: str
    time: Time


class LogPage(Shape):
    job_id: str
    state: JobState
    lines: list[LogLine]
    next: int
    finished: bool


class AttemptMetrics(Shape):
    n: int
    run_id: str | None
    metrics: dict[str, list[list[float]]] = Field(description="key: [[step, value, time_ms]]")


class MetricHistory(Shape):
    job_id: str
    attempts: list[AttemptMetrics]
    warning: str | None = None


class SubmitRequest(Shape):
    """Either a whole ``spec``, or a ``template`` with params and flag overrides."""

    spec: JobSpec | None = None
    template: Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None = None
    params: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = Field(
        None, description="flags: gpus, nodes, cpus, memory, priority, retries, timeout, env, "
        "secret_env, name, experiment, register_model, data ({NAME: URI}), artifacts ([PATH])",
    )  # fmt: skip
    source: str | None = None
    depends_on: list[str] | None = Field(None, description="jobs (ids or names) to run after")
    dependencies: list[Dependency] | None = Field(
        None, description="jobs to wait on, with the condition: {job, when: ok|any|notok}"
    )
    outputs: list[str] | None = None
    workdir: str | None = None
    name: str | None = None
    group: str | None = None
    package: str | None = Field(None, description="base64 zip of captured variables and files")
    client_token: str | None = Field(None, description="same as the Idempotency-Key header")


class BatchRequest(Shape):
    """Jobs submitted together: all are created or none. A job names another of the group
    by its ``name`` in ``depends_on``/``dependencies`` (names must be unique in the group)."""

    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_GROUP_JOBS)
    client_token: str | None = Field(None, description="same as the Idempotency-Key header")


class BatchAnswer(Shape):
    jobs: list[Job] = Field(description="in the order of the request")


class PriorityChange(Shape):
    priority: int | str = Field(description="low, normal, high, urgent or an integer")
